//! Drive a real stagebot against the fake GitHub: real git repositories, signed webhooks over
//! real HTTP, the real server, worker, store and local provider. Used by the integration tests
//! and by `stagebot demo` (so no `cfg(test)`: the demo is the same flow a user can watch).
//!
//! # Every bot reply must be read
//!
//! As in bors's test harness, a test must read every comment the bot posts, other than the
//! sticky comment; a reply nobody read fails the test, so an extra or duplicated reply cannot
//! pass unnoticed. A [`Stack`] keeps the ids of the replies the test has read:
//!
//! - [`Stack::expect_reply`]`(pr, |text| …)`: the oldest unread reply on the PR, which must exist
//!   and satisfy the check (the test panics otherwise, showing the text); returns it.
//! - [`Stack::next_reply`]`(pr)`: the oldest unread reply, if any (`None`: nothing new).
//! - [`Stack::read_replies`]`(pr)`: every unread reply on the PR, oldest first (assert on the
//!   count to catch a duplicate).
//! - [`Stack::expect_no_reply`]`(pr)`: asserts that nothing unread is there.
//! - [`Stack::replies`]`(pr)`: every reply, read or not, *without* reading them.
//! - [`Stack::sticky`]`(pr)`: the sticky comment's current text. It is edited in place and is
//!   never an unread reply.
//!
//! When the `Stack` is dropped or [stopped](Stack::stop), an unread reply fails the test with
//! the unread texts listed ([`Stack::unread_replies`] shows them without failing). A `Stack`
//! started on an existing fake ([`Stack::start_with`], a restart) answers only for the replies
//! posted during its own life: the earlier ones were the previous `Stack`'s to read.
//! `stagebot demo` turns the check off ([`Stack::ignore_unread_replies`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::app::{App, Parts, Settings};
use crate::clock::{ManualClock, SharedClock};
use crate::event::payloads::{self, CommentPayload, PrPayload, PushPayload};
use crate::fake_github::{FakeComment, FakeGitHub, FakePr, WebhookFate};
use crate::github::{GitHub, GitHubConfig, RetryPolicy};
use crate::provider::Provider;
use crate::provider::local::{LocalConfig, LocalProvider};
use crate::proxy::Routes;
use crate::signature::{WebhookSecrets, sign};
use crate::store::Store;
use crate::types::{Permission, PrNumber, RepoName, Sha};

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("git {args}: {message}")]
    Git { args: String, message: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// A real git repository on disk, made and changed by the test or demo.
#[derive(Debug, Clone)]
pub struct GitRepo {
    dir: PathBuf,
}

impl GitRepo {
    /// `git init` a repository with an initial commit of `files` on `main`.
    pub fn init<P: AsRef<str>, C: AsRef<str>>(
        dir: &Path,
        files: &[(P, C)],
    ) -> Result<(Self, Sha), KitError> {
        std::fs::create_dir_all(dir)?;
        let repo = Self {
            dir: dir.to_path_buf(),
        };
        repo.git(&["init", "-q", "-b", "main"])?;
        let sha = repo.commit("main", files, "initial commit")?;
        Ok((repo, sha))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL stagebot clones from (`file://`).
    pub fn clone_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    fn git(&self, args: &[&str]) -> Result<String, KitError> {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=stagebot-test",
                "-c",
                "user.email=test@stagebot.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(&self.dir)
            .output()?;
        if !out.status.success() {
            return Err(KitError::Git {
                args: args.join(" "),
                message: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Commit `files` on `branch` (created from `main` when new); returns the commit.
    pub fn commit<P: AsRef<str>, C: AsRef<str>>(
        &self,
        branch: &str,
        files: &[(P, C)],
        message: &str,
    ) -> Result<Sha, KitError> {
        let exists = self
            .git(&[
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ])
            .is_ok();
        let has_commits = self.git(&["rev-parse", "--verify", "-q", "HEAD"]).is_ok();
        if exists || !has_commits {
            if has_commits {
                self.git(&["checkout", "-q", branch])?;
            }
        } else {
            self.git(&["checkout", "-q", "-b", branch, "main"])?;
        }
        for (path, content) in files {
            let p = self.dir.join(path.as_ref());
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, content.as_ref())?;
        }
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "--allow-empty", "-m", message])?;
        let sha = self.git(&["rev-parse", "HEAD"])?;
        Sha::new(&sha).map_err(|e| KitError::Other(e.to_string()))
    }

    /// Merge `branch` into `main` (a merge commit); returns the merge commit.
    pub fn merge(&self, branch: &str) -> Result<Sha, KitError> {
        self.git(&["checkout", "-q", "main"])?;
        self.git(&[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            &format!("Merge {branch}"),
            branch,
        ])?;
        let sha = self.git(&["rev-parse", "HEAD"])?;
        Sha::new(&sha).map_err(|e| KitError::Other(e.to_string()))
    }
}

/// A tiny web app (Python, no dependencies) that answers `GET /` with its commit and `/healthz`
/// with `ok`, and the `.github/stagebot.yml` that runs it.
pub fn python_app_files(extra_config: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.py", PYTHON_APP.to_owned()),
        (
            ".github/stagebot.yml",
            format!("start: exec python3 app.py\nhealth: /healthz\n{extra_config}"),
        ),
    ]
}

const PYTHON_APP: &str = r#"import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/healthz" else os.environ.get("STAGEBOT_SHA", "?").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Options for [`Stack::start`].
pub struct StackOptions {
    pub data_dir: PathBuf,
    /// `None`: an ephemeral port on 127.0.0.1.
    pub listen: Option<SocketAddr>,
    pub repo: RepoName,
    pub max_previews: Option<usize>,
    /// Extra variables for every environment.
    pub vars: Vec<(String, String)>,
    /// Use a manual clock (tests of the sweeper) starting at this time.
    pub manual_clock: Option<chrono::DateTime<chrono::Utc>>,
    pub header_read_timeout: Duration,
    /// The webhook secrets, comma-separated (rotation); [`Stack::send`] signs with the first.
    pub secrets: String,
    /// Use the command provider with these scripts instead of the local provider.
    pub command_provider: Option<crate::provider::command::CommandConfig>,
    /// `STAGEBOT_LOG_MAX` (default 10 MiB).
    pub log_max: Option<u64>,
    /// The local provider's sandbox (default: bwrap from `PATH`).
    pub sandbox: crate::provider::sandbox::SandboxConfig,
    /// Write the App's private key to this file (as `PRIVATE_KEY_PATH` would name it); its
    /// directory is hidden from the sandbox like the real server's.
    pub key_file: Option<PathBuf>,
    /// A database per environment on this PostgreSQL server.
    pub postgres: Option<crate::database::Postgres>,
    /// Sentry settings.
    pub sentry: crate::sentry::SentrySettings,
    /// Scheduled backups.
    pub backup: Option<crate::backup::BackupSettings>,
    /// Local provider: built artifacts kept per environment (0: build every time).
    pub artifact_keep: usize,
    /// `STAGEBOT_RECOVER=auto`: an empty store is rebuilt from the fake GitHub before serving.
    pub recover: bool,
    /// `STAGEBOT_PROXY_IDLE_TIMEOUT` (default 2 min).
    pub proxy_idle_timeout: Option<Duration>,
    /// `STAGEBOT_MAX_CONNECTIONS` (default 1024).
    pub max_connections: Option<usize>,
    /// Use the in-memory provider (nothing runs; tests of engine and runner stories).
    pub memory_provider: Option<crate::provider::memory::MemoryProvider>,
    /// How long stagebot waits for one GitHub answer (default: the client's 60 s); the chaos
    /// run's injected timeouts hold answers longer than this.
    pub github_attempt_timeout: Option<Duration>,
    /// Attempts of a failed delivery before it is a dead letter (default 3 here).
    pub delivery_attempts: Option<u32>,
}

impl StackOptions {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            listen: None,
            repo: RepoName::new("acme", "webapp").unwrap_or_else(|_| unreachable!("valid literal")),
            max_previews: None,
            vars: Vec::new(),
            manual_clock: None,
            header_read_timeout: crate::serve::HEADER_READ_TIMEOUT,
            command_provider: None,
            secrets: SECRET.to_owned(),
            log_max: None,
            sandbox: crate::provider::sandbox::SandboxConfig::default(),
            key_file: None,
            postgres: None,
            sentry: crate::sentry::SentrySettings::default(),
            backup: None,
            artifact_keep: 3,
            recover: false,
            proxy_idle_timeout: None,
            max_connections: None,
            memory_provider: None,
            github_attempt_timeout: None,
            delivery_attempts: None,
        }
    }
}

/// The whole product running against the fake GitHub.
pub struct Stack {
    pub fake: FakeGitHub,
    pub app: App,
    pub addr: SocketAddr,
    pub repo: RepoName,
    pub clock: Option<ManualClock>,
    secret: String,
    http: reqwest::Client,
    server: Option<crate::serve::Server>,
    next_delivery: AtomicU64,
    next_comment: AtomicU64,
    /// Bot replies the test has read (comment ids), and those posted before this `Stack`.
    read_replies: Mutex<BTreeSet<u64>>,
    /// Fail on unread replies when dropped or stopped (see the module's documentation).
    check_replies: bool,
}

pub const INSTALLATION: u64 = 1;
pub const SECRET: &str = "stagebot-test-secret";

impl Stack {
    /// Start the fake GitHub and the real server on loopback.
    pub async fn start(opts: StackOptions) -> Result<Stack, KitError> {
        let fake = FakeGitHub::start().await;
        fake.add_installation(INSTALLATION, opts.repo.owner());
        fake.add_repo(&opts.repo, "main", INSTALLATION);
        Self::start_with(fake, opts).await
    }

    /// Start the real server against an existing fake (a restart keeps the fake's state).
    pub async fn start_with(fake: FakeGitHub, opts: StackOptions) -> Result<Stack, KitError> {
        // Replies posted before this `Stack` are not its to read.
        let already_posted: BTreeSet<u64> =
            fake.app_comments().into_iter().map(|(_, c)| c.id).collect();
        let listener = tokio::net::TcpListener::bind(
            opts.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .await?;
        let addr = listener.local_addr()?;
        let mut settings = Settings::new(
            opts.data_dir.clone(),
            format!("http://{addr}"),
            format!("localhost:{}", addr.port()),
        );
        settings.limits.max_previews = opts.max_previews;
        // The public URL above is the default one: own pages answer as without one.
        settings.own_hosts = crate::server::own_hosts(None, Some(addr));
        if let Some(max) = opts.log_max {
            settings.log_max = max;
        }
        settings.delivery_retry.base = Duration::from_millis(50);
        settings.delivery_retry.max = Duration::from_millis(200);
        settings.delivery_retry.max_attempts = opts.delivery_attempts.unwrap_or(3);
        settings.vars = opts.vars.iter().cloned().collect();
        settings.postgres = opts.postgres.clone();
        settings.sentry = opts.sentry.clone();
        settings.backup = opts.backup.clone();
        if let Some(idle) = opts.proxy_idle_timeout {
            settings.proxy_idle_timeout = idle;
        }
        if let Some(max) = opts.max_connections {
            settings.max_connections = max;
        }
        // "Sign in with GitHub" through the fake's OAuth pages (src/web/).
        settings.github_web_url = fake.url();
        settings.github_oauth = Some(crate::web::OAuthApp {
            client_id: crate::fake_github::FAKE_CLIENT_ID.to_owned(),
            client_secret: crate::types::Secret::new(crate::fake_github::FAKE_CLIENT_SECRET),
        });
        let retry = RetryPolicy {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_total: Duration::from_secs(2),
            attempt_timeout: opts
                .github_attempt_timeout
                .unwrap_or(RetryPolicy::default().attempt_timeout),
            ..RetryPolicy::default()
        };
        let github = GitHub::new(GitHubConfig {
            api_url: fake.url(),
            app_id: fake.app_id(),
            private_key_pem: fake.private_key_pem(),
            retry,
        })
        .map_err(|e| KitError::Other(e.to_string()))?;
        let routes = Routes::default();
        let mut local = LocalConfig::new(opts.data_dir.clone(), routes.clone());
        local.health_timeout = Duration::from_secs(20);
        local.sandbox = opts.sandbox.clone();
        if let Some(key_file) = &opts.key_file {
            std::fs::write(key_file, fake.private_key_pem().expose())?;
            if let Some(dir) = key_file.parent() {
                local.sandbox.hidden.push(dir.to_path_buf());
            }
        }
        local.artifact_keep = opts.artifact_keep;
        let provider = match (opts.command_provider.clone(), opts.memory_provider.clone()) {
            (_, Some(memory)) => Provider::Memory(memory),
            (Some(cfg), None) => {
                Provider::Command(crate::provider::command::CommandProvider::new(cfg))
            }
            (None, None) => Provider::Local(
                LocalProvider::new(local).map_err(|e| KitError::Other(e.to_string()))?,
            ),
        };
        let store = Store::open_waiting(&opts.data_dir, Duration::from_secs(10))
            .map_err(|e| KitError::Other(e.to_string()))?;
        let clock = opts.manual_clock.map(ManualClock::new);
        let shared: SharedClock = match &clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(crate::clock::SystemClock),
        };
        let secrets = WebhookSecrets::parse(&opts.secrets)
            .ok_or_else(|| KitError::Other("StackOptions::secrets holds no secret".into()))?;
        let secret = opts
            .secrets
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or_default()
            .to_owned();
        let app = App::new(Parts {
            settings,
            store,
            github,
            provider,
            routes,
            clock: shared,
            secrets,
        });
        if opts.recover && app.store().is_empty() {
            app.recover()
                .await
                .map_err(|e| KitError::Other(format!("recover: {e}")))?;
        }
        // Redeliveries the fake is asked for come here (src/catchup.rs).
        fake.set_webhook_target(&format!("http://{addr}/webhook"), &secret);
        let server = crate::serve::start(
            app.clone(),
            listener,
            crate::serve::Intervals {
                reconcile: Duration::from_secs(3600),
                header_read_timeout: opts.header_read_timeout,
            },
        )
        .await;
        server.started().await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| KitError::Other(e.to_string()))?;
        Ok(Stack {
            fake,
            app,
            addr,
            repo: opts.repo,
            clock,
            secret,
            http,
            server: Some(server),
            next_delivery: AtomicU64::new(1),
            next_comment: AtomicU64::new(1),
            read_replies: Mutex::new(already_posted),
            check_replies: true,
        })
    }

    /// Stop the server (graceful), keeping the fake running; returns the fake for a restart.
    /// Fails (panics) if a bot reply posted during this `Stack`'s life was not read.
    pub async fn stop(mut self) -> FakeGitHub {
        if let Some(s) = self.server.take() {
            s.stop();
            let _ = s.wait().await;
        }
        self.fake.clone()
        // Dropping `self` checks the replies.
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// POST a signed webhook; returns the status code and JSON answer.
    pub async fn send(&self, event: &str, payload: &Value) -> Result<(u16, Value), KitError> {
        let n = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
        self.send_as(event, &id, payload).await
    }

    pub async fn send_as(
        &self,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> Result<(u16, Value), KitError> {
        let body = serde_json::to_vec(payload).map_err(|e| KitError::Other(e.to_string()))?;
        let fate = self.fake.webhook_fate();
        if fate == WebhookFate::Lost {
            // The chaos run: GitHub could not reach stagebot; its log says so.
            self.fake.record_delivery(delivery, event, payload, 0);
            return Ok((0, serde_json::json!({ "lost": true })));
        }
        let resp = self
            .http
            .post(format!("{}/webhook", self.url()))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", sign(&self.secret, &body))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| KitError::Other(e.to_string()))?;
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(Value::Null);
        if fate == WebhookFate::AnswerLost {
            // The chaos run: stagebot got it, but GitHub timed out waiting for the answer.
            self.fake.record_delivery(delivery, event, payload, 0);
            return Ok((0, serde_json::json!({ "lost": true })));
        }
        // The fake's delivery log shows what it "sent" and the answer, as GitHub's does.
        self.fake.record_delivery(delivery, event, payload, status);
        Ok((status, json))
    }

    /// Process everything and wait for deploys to finish.
    pub async fn settle(&self) -> Result<(), KitError> {
        self.app
            .settle()
            .await
            .map_err(|e| KitError::Other(e.to_string()))
    }

    /// Mirror files into the fake's contents API at `git_ref` (a branch name).
    pub fn mirror_ref<P: AsRef<str>, C: AsRef<str>>(&self, git_ref: &str, files: &[(P, C)]) {
        for (path, content) in files {
            self.fake
                .set_file(&self.repo, git_ref, path.as_ref(), content.as_ref());
        }
    }

    /// Mirror a file into the fake's contents API at `sha`.
    pub fn mirror<P: AsRef<str>, C: AsRef<str>>(&self, sha: &Sha, files: &[(P, C)]) {
        for (path, content) in files {
            self.fake
                .set_file(&self.repo, sha.as_str(), path.as_ref(), content.as_ref());
        }
    }

    /// Open a PR (fake state + `pull_request.opened`).
    pub async fn open_pr(&self, pr: &TestPr) -> Result<(), KitError> {
        let mut fake_pr = FakePr::new(pr.number, &pr.branch, pr.sha.clone())
            .author(&pr.author)
            .clone_url(&pr.clone_url);
        if pr.draft {
            fake_pr = fake_pr.draft();
        }
        if pr.fork {
            fake_pr = fake_pr.fork();
        }
        self.fake.upsert_pr(&self.repo, fake_pr);
        self.pr_event("opened", pr, None).await
    }

    /// Send a `pull_request` event for `pr` as it is now.
    pub async fn pr_event(
        &self,
        action: &str,
        pr: &TestPr,
        before: Option<&Sha>,
    ) -> Result<(), KitError> {
        let (status, body) = self
            .send("pull_request", &self.pr_payload(action, pr, before))
            .await?;
        expect_accepted(status, &body)
    }

    /// The `pull_request` payload GitHub sends for `pr` as it is now.
    pub fn pr_payload(&self, action: &str, pr: &TestPr, before: Option<&Sha>) -> Value {
        let mut p = PrPayload::new(action, &self.repo, pr.number);
        p.head_ref = pr.branch.clone();
        p.head_sha = pr.sha.to_string();
        p.author_login = pr.author.clone();
        p.draft = pr.draft;
        p.fork = pr.fork;
        p.clone_url = Some(pr.clone_url.clone());
        p.head_clone_url = Some(pr.clone_url.clone());
        p.before = before.map(|b| b.to_string());
        p.merged = pr.merged;
        if pr.merged {
            p.merge_commit_sha = pr.merge_sha.as_ref().map(|s| s.to_string());
        }
        p.installation_id = Some(INSTALLATION);
        payloads::pull_request(&p)
    }

    /// New head for a PR: fake state + `pull_request.synchronize`.
    pub async fn synchronize(&self, pr: &mut TestPr, sha: Sha) -> Result<(), KitError> {
        let before = std::mem::replace(&mut pr.sha, sha);
        self.fake
            .set_pr_head(&self.repo, PrNumber(pr.number), pr.sha.clone());
        self.pr_event("synchronize", pr, Some(&before)).await
    }

    /// Close (or merge) a PR.
    pub async fn close_pr(&self, pr: &mut TestPr, merged: bool) -> Result<(), KitError> {
        pr.merged = merged;
        self.fake
            .set_pr_state(&self.repo, PrNumber(pr.number), false, merged);
        self.pr_event("closed", pr, None).await
    }

    /// A push to `branch`.
    pub async fn push(
        &self,
        branch: &str,
        before: &Sha,
        after: &Sha,
        clone_url: &str,
    ) -> Result<(), KitError> {
        let mut p = PushPayload::new(&self.repo, branch);
        p.before = before.to_string();
        p.after = after.to_string();
        p.clone_url = Some(clone_url.to_owned());
        p.installation_id = Some(INSTALLATION);
        let (status, body) = self.send("push", &payloads::push(&p)).await?;
        expect_accepted(status, &body)
    }

    /// `delete` of a branch.
    pub async fn delete_branch(&self, branch: &str) -> Result<(), KitError> {
        let payload = payloads::delete_branch(&self.repo, Some(INSTALLATION), branch, "octocat");
        let (status, body) = self.send("delete", &payload).await?;
        expect_accepted(status, &body)
    }

    /// `user` comments `body` on PR `number`; returns the comment id.
    pub async fn comment(&self, user: &str, number: u64, body: &str) -> Result<u64, KitError> {
        let id = self
            .fake
            .add_user_comment(&self.repo, PrNumber(number), user, body);
        let _ = self.next_comment.fetch_add(1, Ordering::Relaxed);
        let mut p = CommentPayload::new(&self.repo, number, body);
        p.comment_id = id;
        p.author_login = user.to_owned();
        p.author_association = "MEMBER".into();
        p.installation_id = Some(INSTALLATION);
        let (status, resp) = self
            .send("issue_comment", &payloads::issue_comment(&p))
            .await?;
        expect_accepted(status, &resp)?;
        Ok(id)
    }

    pub fn grant(&self, user: &str, permission: Permission) {
        self.fake.set_permission(&self.repo, user, permission);
    }

    /// GET `url` (a preview URL on this stack's domain) through the built-in proxy.
    pub async fn get(&self, url: &str) -> Result<(u16, String), KitError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| KitError::Other(e.to_string()))?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let client = reqwest::Client::builder()
            .resolve(&host, self.addr)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| KitError::Other(e.to_string()))?;
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| KitError::Other(e.to_string()))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// The sticky comment's text on a PR (there must be at most one).
    pub fn sticky(&self, number: u64) -> Option<String> {
        let stickies: Vec<_> = self
            .fake
            .comments(&self.repo, PrNumber(number))
            .into_iter()
            .filter(|c| c.is_sticky())
            .collect();
        assert!(
            stickies.len() <= 1,
            "more than one sticky comment on #{number}"
        );
        stickies.first().map(|c| c.text().to_owned())
    }

    /// Every reply (non-sticky bot comment) on a PR, read or not, oldest first. Does not read
    /// them: use [`expect_reply`](Self::expect_reply) or [`read_replies`](Self::read_replies).
    pub fn replies(&self, number: u64) -> Vec<String> {
        self.reply_comments(number)
            .into_iter()
            .map(|c| c.text().to_owned())
            .collect()
    }

    fn reply_comments(&self, number: u64) -> Vec<FakeComment> {
        let app = self.fake.app_login();
        self.fake
            .comments(&self.repo, PrNumber(number))
            .into_iter()
            .filter(|c| !c.is_sticky() && c.author == app)
            .collect()
    }

    fn read_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        // A test that panicked while holding it poisoned it; the set itself is still right.
        self.read_replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Read the oldest unread reply on PR `number`, if there is one.
    pub fn next_reply(&self, number: u64) -> Option<String> {
        let comments = self.reply_comments(number);
        let mut read = self.read_set();
        let next = comments.into_iter().find(|c| !read.contains(&c.id))?;
        read.insert(next.id);
        Some(next.text().to_owned())
    }

    /// Read the oldest unread reply on PR `number`: it must exist and pass `check` (else the
    /// test fails, showing the text). Returns the text.
    #[track_caller]
    pub fn expect_reply(&self, number: u64, check: impl FnOnce(&str) -> bool) -> String {
        let Some(text) = self.next_reply(number) else {
            panic!("expected a bot reply on #{number}, found no unread reply");
        };
        assert!(check(&text), "unexpected bot reply on #{number}:\n{text}");
        text
    }

    /// Read every unread reply on PR `number`, oldest first.
    pub fn read_replies(&self, number: u64) -> Vec<String> {
        std::iter::from_fn(|| self.next_reply(number)).collect()
    }

    /// Fails the test if PR `number` has an unread reply.
    #[track_caller]
    pub fn expect_no_reply(&self, number: u64) {
        let comments = self.reply_comments(number);
        let read = self.read_set();
        let unread: Vec<&str> = comments
            .iter()
            .filter(|c| !read.contains(&c.id))
            .map(|c| c.text())
            .collect();
        assert!(
            unread.is_empty(),
            "expected no new bot reply on #{number}, found {}:\n{}",
            unread.len(),
            unread.join("\n---\n")
        );
    }

    /// The bot replies (in any repository) nobody read: `(repo, PR, text)`, oldest first.
    pub fn unread_replies(&self) -> Vec<(String, u64, String)> {
        let read = self.read_set();
        self.fake
            .app_comments()
            .into_iter()
            .filter(|(_, c)| !c.is_sticky() && !read.contains(&c.id))
            .map(|(repo, c)| (repo, c.pr.0, c.text().to_owned()))
            .collect()
    }

    /// Read every unread reply in every repository, oldest first: `(repo, PR, text)`. For a test
    /// that checks the replies some other way (the chaos run compares them with a fault-free
    /// run's), so they count as read.
    pub fn read_every_reply(&self) -> Vec<(String, u64, String)> {
        let comments = self.fake.app_comments();
        let mut read = self.read_set();
        comments
            .into_iter()
            .filter(|(_, c)| !c.is_sticky() && read.insert(c.id))
            .map(|(repo, c)| (repo, c.pr.0, c.text().to_owned()))
            .collect()
    }

    /// Do not fail on unread replies (`stagebot demo`, which prints what it wants to show).
    pub fn ignore_unread_replies(&mut self) {
        self.check_replies = false;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.check_replies || std::thread::panicking() {
            return;
        }
        let unread = self.unread_replies();
        if !unread.is_empty() {
            let list: Vec<String> = unread
                .iter()
                .map(|(repo, pr, text)| format!("{repo}#{pr}:\n{text}"))
                .collect();
            panic!(
                "{} bot repl{} never read by the test (read each with Stack::expect_reply):\n{}",
                unread.len(),
                if unread.len() == 1 {
                    "y was"
                } else {
                    "ies were"
                },
                list.join("\n---\n")
            );
        }
    }
}

fn expect_accepted(status: u16, body: &Value) -> Result<(), KitError> {
    // 0 with `lost`: the chaos run lost it on purpose (see `send_as`); catch-up brings it back.
    if status == 202 || (status == 0 && body["lost"] == true) {
        Ok(())
    } else {
        Err(KitError::Other(format!(
            "webhook answered {status}: {body}"
        )))
    }
}

/// A PR as a test sees it.
#[derive(Debug, Clone)]
pub struct TestPr {
    pub number: u64,
    pub branch: String,
    pub sha: Sha,
    pub author: String,
    pub clone_url: String,
    pub draft: bool,
    pub fork: bool,
    pub merged: bool,
    /// The merge commit `closed` reports when the PR is merged.
    pub merge_sha: Option<Sha>,
}

impl TestPr {
    pub fn new(number: u64, branch: &str, sha: Sha, clone_url: &str) -> Self {
        Self {
            number,
            branch: branch.to_owned(),
            sha,
            author: "octocat".into(),
            clone_url: clone_url.to_owned(),
            draft: false,
            fork: false,
            merged: false,
            merge_sha: None,
        }
    }
}
