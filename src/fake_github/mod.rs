//! A stateful fake GitHub served over HTTP, for tests and `stagebot demo`.
//!
//! It speaks the REST routes stagebot uses, with GitHub's shapes and authentication rules: app
//! JWTs (RS256, verified with the test key's public half) for the app routes, installation tokens
//! it issued itself for everything else. Tests drive it through [`FakeGitHub`]'s methods: seed
//! installations, repositories, pull requests, permissions and files; inspect comments,
//! reactions, statuses and deployments; inject faults; read the log of every request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use stagebot::fake_github::{FakeGitHub, FakePr};
//! use stagebot::types::{RepoName, Sha};
//! let fake = FakeGitHub::start().await;
//! let repo: RepoName = "octo/web".parse()?;
//! fake.add_installation(7, "octo");
//! fake.add_repo(&repo, "main", 7);
//! fake.upsert_pr(&repo, FakePr::new(42, "login-page", Sha::new("abcdef1234567")?));
//! // point `GitHubConfig { api_url: fake.url(), app_id: fake.app_id(), private_key_pem, .. }` at it
//! # Ok(()) }
//! ```

mod chaos;
mod oauth;
mod server;

pub use oauth::{FAKE_CLIENT_ID, FAKE_CLIENT_SECRET};
pub use server::manifest::{FakeRegisteredApp, MANIFEST_APP_PRIVATE_KEY_PEM};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::types::{Permission, PrNumber, RepoName, Secret, Sha};

pub use http::Method;

pub use chaos::{Chaos, ChaosFault, ChaosKind, ChaosStats, WebhookFate};

/// The fake app's id.
pub const FAKE_APP_ID: u64 = 4242;
/// The fake app's slug; its comments are authored by `stagebot[bot]`.
pub const FAKE_APP_SLUG: &str = "stagebot";
/// The test app key (never registered with any real GitHub App).
pub const TEST_PRIVATE_KEY_PEM: &str = include_str!("../../fixtures/keys/test-app-private-key.pem");
/// The public half of [`TEST_PRIVATE_KEY_PEM`]; the fake verifies app JWTs with it.
pub const TEST_PUBLIC_KEY_PEM: &str = include_str!("../../fixtures/keys/test-app-public-key.pem");
/// How far apart the fake lets a JWT's clock be from its own.
pub const JWT_LEEWAY_SECS: i64 = 60;

/// A pull request in the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePr {
    /// Its number.
    pub number: PrNumber,
    /// Its title.
    pub title: String,
    /// The head branch.
    pub head_ref: String,
    /// The head commit.
    pub head_sha: Sha,
    /// The target branch.
    pub base_ref: String,
    /// The author's login.
    pub author: String,
    /// A draft.
    pub draft: bool,
    /// The head is in the author's fork.
    pub fork: bool,
    /// Open (else closed).
    pub open: bool,
    /// Merged (implies closed).
    pub merged: bool,
    /// The head repository's clone URL; `None` derives `https://github.com/<head repo>.git`.
    pub head_clone_url: Option<String>,
}

impl FakePr {
    /// An open, non-draft, same-repository PR by `octocat` against `main`.
    pub fn new(number: u64, head_ref: &str, head_sha: Sha) -> Self {
        Self {
            number: PrNumber(number),
            title: format!("PR #{number}"),
            head_ref: head_ref.to_owned(),
            head_sha,
            base_ref: "main".to_owned(),
            author: "octocat".to_owned(),
            draft: false,
            fork: false,
            open: true,
            merged: false,
            head_clone_url: None,
        }
    }

    /// With this title.
    pub fn title(mut self, title: &str) -> Self {
        self.title = title.to_owned();
        self
    }

    /// By this author.
    pub fn author(mut self, login: &str) -> Self {
        self.author = login.to_owned();
        self
    }

    /// From the author's fork.
    pub fn fork(mut self) -> Self {
        self.fork = true;
        self
    }

    /// A draft.
    pub fn draft(mut self) -> Self {
        self.draft = true;
        self
    }

    /// Against this base branch.
    pub fn base(mut self, base_ref: &str) -> Self {
        self.base_ref = base_ref.to_owned();
        self
    }

    /// Cloned from this URL (e.g. a local `file://` repository in the demo).
    pub fn clone_url(mut self, url: &str) -> Self {
        self.head_clone_url = Some(url.to_owned());
        self
    }
}

/// An issue comment in the fake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeComment {
    /// Its id.
    pub id: u64,
    /// The PR it is on.
    pub pr: PrNumber,
    /// Who wrote it (`stagebot[bot]` for the app).
    pub author: String,
    /// Written by the app (with an installation token).
    pub by_app: bool,
    /// The raw body, markers included.
    pub body: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last edited (== `created_at` if never).
    pub updated_at: DateTime<Utc>,
}

impl FakeComment {
    /// Carries the sticky marker.
    pub fn is_sticky(&self) -> bool {
        self.body.starts_with(crate::github::STICKY_MARKER)
    }

    /// The body without the sticky marker line.
    pub fn text(&self) -> &str {
        self.body
            .strip_prefix(crate::github::STICKY_MARKER)
            .map_or(self.body.as_str(), |rest| {
                rest.strip_prefix('\n').unwrap_or(rest)
            })
    }
}

/// A commit status as posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeStatus {
    /// `pending`, `success`, `failure` or `error`.
    pub state: String,
    /// e.g. `stagebot/preview`.
    pub context: String,
    /// Its description.
    pub description: String,
    /// Its link.
    pub target_url: Option<String>,
}

/// A deployment status as posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeDeploymentStatus {
    /// `in_progress`, `success`, `inactive`, …
    pub state: String,
    /// The environment's URL.
    pub environment_url: Option<String>,
    /// The logs' URL.
    pub log_url: Option<String>,
    /// Its description.
    pub description: String,
}

/// A deployment with its statuses (oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeDeployment {
    /// Its id.
    pub id: u64,
    /// The commit it deploys (the `ref` resolved: a full sha is itself, a PR head branch its
    /// head commit).
    pub sha: String,
    /// The `ref` it was created with.
    pub git_ref: String,
    /// Its `payload` as sent (`{}` when none was).
    pub payload: serde_json::Value,
    /// The environment name.
    pub environment: String,
    /// Its description.
    pub description: String,
    /// `transient_environment`.
    pub transient: bool,
    /// `production_environment`.
    pub production: bool,
    /// Statuses in the order they were posted.
    pub statuses: Vec<FakeDeploymentStatus>,
}

impl FakeDeployment {
    /// The state of the newest status, if any.
    pub fn last_state(&self) -> Option<&str> {
        self.statuses.last().map(|s| s.state.as_str())
    }
}

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, as sent (percent-encoded).
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The JSON body (`null` if none; a string if it was not JSON).
    pub body: serde_json::Value,
}

/// What an injected fault answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// 500 Server Error.
    Status500,
    /// 429 with `Retry-After`.
    TooMany429 {
        /// The `Retry-After` value.
        retry_after_s: u64,
    },
    /// 403 "secondary rate limit" with `Retry-After`.
    SecondaryRateLimit403 {
        /// The `Retry-After` value.
        retry_after_s: u64,
    },
    /// 422 Validation Failed.
    Unprocessable422,
    /// Served normally, but only after this many milliseconds (a slow GitHub).
    Delay {
        /// How long the answer is held back.
        ms: u64,
    },
    /// The request is served (a comment is created…), but the answer is lost: 502 Bad Gateway,
    /// as from a proxy in between.
    ServedThen502,
}

/// The next `times` requests whose path starts with `path_prefix` (and whose method is `method`,
/// if given) are answered with `kind` instead of being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only this method, or any.
    pub method: Option<Method>,
    /// e.g. `/repos/octo/web/statuses`.
    pub path_prefix: String,
    /// How many requests it hits.
    pub times: u32,
    /// The answer.
    pub kind: FaultKind,
}

impl Fault {
    /// `kind` for the next `times` requests under `path_prefix`, any method.
    pub fn new(path_prefix: &str, times: u32, kind: FaultKind) -> Self {
        Self {
            method: None,
            path_prefix: path_prefix.to_owned(),
            times,
            kind,
        }
    }

    /// Only for this method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }
}

/// Requests matching this are served (their effect applied and recorded) but the answer is held
/// back until [`FakeGitHub::release_stalled`]: what a client sees when GitHub applied a request
/// and the process died (or the network broke) before the answer arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// `POST`, …
    pub method: Method,
    /// e.g. `/repos/octo/web/deployments`; only the exact path matches (not sub-paths).
    pub path: String,
    /// How many requests it holds.
    pub times: u32,
}

/// One entry of the App's webhook delivery log (`GET /app/hook/deliveries`): a delivery the fake
/// "sent" and what the receiver answered. A redelivery is an entry of its own with the same GUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FakeHookDelivery {
    /// This attempt's id.
    pub id: u64,
    /// The delivery's GUID (`X-GitHub-Delivery`).
    pub guid: String,
    /// When it was sent.
    pub delivered_at: DateTime<Utc>,
    /// A redelivery.
    pub redelivery: bool,
    /// The receiver's HTTP status (0: no answer).
    pub status_code: u16,
    /// `OK`, `Invalid HTTP Response: 502`, `failed to connect to host`…
    pub status: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The payload's `action`.
    pub action: Option<String>,
    /// The payload's `installation.id`.
    pub installation_id: Option<u64>,
    /// The payload's `repository.id`.
    pub repository_id: Option<u64>,
    /// The body sent.
    pub payload: serde_json::Value,
}

/// Where redeliveries go: the receiver's webhook URL and the secret they are signed with.
#[derive(Debug, Clone)]
struct WebhookTarget {
    url: String,
    secret: String,
}

/// A delivery the fake will POST once the lock is released (a redelivery).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    target: WebhookTarget,
    guid: String,
    event: String,
    payload: serde_json::Value,
}

/// A handle on a running fake GitHub. Clones share the same state and server.
#[derive(Clone)]
pub struct FakeGitHub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FakeGitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGitHub")
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

struct Shared {
    url: String,
    /// The App the fake is: its id and the key its JWTs verify with (a manifest registration
    /// replaces it: server/manifest.rs).
    identity: Mutex<server::manifest::Identity>,
    /// Apps registered from manifests, and their codes.
    manifests: Mutex<server::manifest::Registry>,
    state: Mutex<State>,
    shutdown: tokio::sync::Notify,
    /// Bumped by [`FakeGitHub::release_stalled`]; stalled answers wait for a change.
    released: tokio::sync::watch::Sender<u64>,
}

struct RepoEntry {
    name: RepoName,
    id: u64,
    /// What `GET /repos/{o}/{r}` and payloads say the clone URL is; `None`:
    /// `https://github.com/<name>.git`.
    clone_url: Option<String>,
    default_branch: String,
    installation_id: u64,
}

struct IssuedToken {
    installation_id: u64,
    expires_at: DateTime<Utc>,
    /// Repository keys (`owner/name`, lower case) the token is limited to; `None`: all of the
    /// installation's.
    repositories: Option<Vec<String>>,
    /// Permissions the token is limited to (`contents` → `read`…); `None`: the app's.
    permissions: Option<serde_json::Map<String, serde_json::Value>>,
}

struct Reaction {
    id: u64,
    content: String,
    user: String,
    created_at: DateTime<Utc>,
}

struct StatusEntry {
    id: u64,
    repo: String,
    sha: String,
    status: FakeStatus,
    created_at: DateTime<Utc>,
}

struct DeploymentEntry {
    repo: String,
    /// Created by the App (through the API with an installation token), not by a user.
    by_app: bool,
    task: String,
    created_at: DateTime<Utc>,
    deployment: FakeDeployment,
    status_ids: Vec<(u64, DateTime<Utc>)>,
}

struct State {
    next_id: u64,
    token_lifetime: Duration,
    installations: BTreeMap<u64, String>,
    tokens: HashMap<String, IssuedToken>,
    /// By lowercase full name.
    repos: BTreeMap<String, RepoEntry>,
    prs: BTreeMap<(String, u64), FakePr>,
    /// (repo key, lowercase login) → (login as given, permission).
    permissions: HashMap<(String, String), (String, Permission)>,
    /// id → (repo key, comment).
    comments: BTreeMap<u64, (String, FakeComment)>,
    reactions: BTreeMap<u64, Vec<Reaction>>,
    statuses: Vec<StatusEntry>,
    deployments: BTreeMap<u64, DeploymentEntry>,
    /// (repo key, ref, path) → content.
    files: HashMap<(String, String, String), String>,
    requests: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    stalls: Vec<Stall>,
    /// Answers held back right now.
    stalled: usize,
    /// (repo key, branch) → head commit, for `GET /repos/{o}/{r}/branches/{branch}`.
    branches: HashMap<(String, String), Sha>,
    /// (repo key, sha) → check runs, in creation order.
    check_runs: HashMap<(String, String), Vec<FakeCheckRun>>,
    /// The installation has not granted `checks: read`: check-run reads answer 403.
    checks_denied: bool,
    /// The App's webhook delivery log, oldest first.
    hook_log: Vec<FakeHookDelivery>,
    webhook_target: Option<WebhookTarget>,
    /// Redeliveries to send once the current request is answered.
    outbox: Vec<Outgoing>,
    /// "Sign in with GitHub": codes and user tokens (oauth.rs).
    oauth: oauth::OAuthState,
    /// Seeded fault injection (the chaos run), when on.
    chaos: Option<chaos::ChaosState>,
}

/// A check run as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCheckRun {
    /// Its id.
    pub id: u64,
    /// Its name, e.g. `test`.
    pub name: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// `success`, `failure`… once completed.
    pub conclusion: Option<String>,
}

impl State {
    fn new() -> Self {
        Self {
            next_id: 1000,
            token_lifetime: Duration::from_secs(3600),
            installations: BTreeMap::new(),
            tokens: HashMap::new(),
            repos: BTreeMap::new(),
            prs: BTreeMap::new(),
            permissions: HashMap::new(),
            comments: BTreeMap::new(),
            reactions: BTreeMap::new(),
            statuses: Vec::new(),
            deployments: BTreeMap::new(),
            files: HashMap::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            stalls: Vec::new(),
            stalled: 0,
            branches: HashMap::new(),
            check_runs: HashMap::new(),
            checks_denied: false,
            hook_log: Vec::new(),
            webhook_target: None,
            outbox: Vec::new(),
            oauth: oauth::OAuthState::default(),
            chaos: None,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

fn repo_key(repo: &RepoName) -> String {
    repo.to_string().to_ascii_lowercase()
}

impl FakeGitHub {
    /// Start a fake on `127.0.0.1:<free port>`, serving until [`shutdown`](Self::shutdown) or the
    /// end of the tokio runtime.
    ///
    /// # Panics
    /// If no local port can be bound; use [`try_start`](Self::try_start) to handle that.
    pub async fn start() -> FakeGitHub {
        match Self::try_start().await {
            Ok(fake) => fake,
            Err(e) => panic!("cannot start the fake GitHub: {e}"),
        }
    }

    /// Start a fake on `127.0.0.1:<free port>`.
    pub async fn try_start() -> std::io::Result<FakeGitHub> {
        let identity = server::manifest::Identity::original()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let fake = FakeGitHub {
            shared: Arc::new(Shared {
                url: format!("http://{addr}"),
                identity: Mutex::new(identity),
                manifests: Mutex::default(),
                state: Mutex::new(State::new()),
                shutdown: tokio::sync::Notify::new(),
                released: tokio::sync::watch::channel(0).0,
            }),
        };
        let router = server::router(fake.clone());
        let stop = fake.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.shared.shutdown.notified().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "fake GitHub stopped");
            }
        });
        Ok(fake)
    }

    /// Stop serving.
    pub fn shutdown(&self) {
        self.shared.shutdown.notify_one();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The API root to put in `GitHubConfig::api_url`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// The app id whose JWTs it accepts.
    pub fn app_id(&self) -> u64 {
        self.identity().id
    }

    /// The app's private key (the test key; after a manifest registration, that App's).
    pub fn private_key_pem(&self) -> Secret {
        Secret::new(self.identity().private_pem)
    }

    /// How a GitHub client reaches this fake as its App (default retries).
    pub fn github_config(&self) -> crate::github::GitHubConfig {
        crate::github::GitHubConfig {
            api_url: self.url(),
            app_id: self.app_id(),
            private_key_pem: self.private_key_pem(),
            retry: crate::github::RetryPolicy::default(),
        }
    }

    /// The login of the app's bot user: `stagebot[bot]`.
    pub fn app_login(&self) -> String {
        format!("{FAKE_APP_SLUG}[bot]")
    }

    /// Installation tokens issued from now on live this long (default 1 h). Zero issues tokens
    /// that are already expired.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state().token_lifetime = lifetime;
    }

    /// Forget every installation token issued so far (as if they expired or were revoked).
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Install the app on `account`.
    pub fn add_installation(&self, id: u64, account: &str) {
        self.state().installations.insert(id, account.to_owned());
    }

    /// Add a repository covered by installation `installation_id`.
    pub fn add_repo(&self, repo: &RepoName, default_branch: &str, installation_id: u64) {
        let mut st = self.state();
        let id = st.id();
        st.repos.insert(
            repo_key(repo),
            RepoEntry {
                name: repo.clone(),
                id,
                clone_url: None,
                default_branch: default_branch.to_owned(),
                installation_id,
            },
        );
    }

    /// What `GET /repos/{o}/{r}` answers as the repository's clone URL.
    pub fn set_clone_url(&self, repo: &RepoName, url: &str) {
        if let Some(r) = self.state().repos.get_mut(&repo_key(repo)) {
            r.clone_url = Some(url.to_owned());
        }
    }

    /// Point `branch` of `repo` at `sha` (`GET /repos/{o}/{r}/branches/{branch}`).
    pub fn set_branch(&self, repo: &RepoName, branch: &str, sha: &Sha) {
        self.state()
            .branches
            .insert((repo_key(repo), branch.to_owned()), sha.clone());
    }

    /// Create or update the check run `name` of commit `sha` (as a CI app would); returns its id.
    pub fn set_check_run(
        &self,
        repo: &RepoName,
        sha: &Sha,
        name: &str,
        status: &str,
        conclusion: Option<&str>,
    ) -> u64 {
        let mut st = self.state();
        let id = st.id();
        let runs = st
            .check_runs
            .entry((repo_key(repo), sha.to_string()))
            .or_default();
        match runs.iter_mut().find(|r| r.name == name) {
            Some(r) => {
                r.status = status.to_owned();
                r.conclusion = conclusion.map(str::to_owned);
                r.id
            }
            None => {
                runs.push(FakeCheckRun {
                    id,
                    name: name.to_owned(),
                    status: status.to_owned(),
                    conclusion: conclusion.map(str::to_owned),
                });
                id
            }
        }
    }

    /// Post a commit status as another app would (`statuses` API).
    pub fn add_status(&self, repo: &RepoName, sha: &Sha, context: &str, state: &str) {
        let mut st = self.state();
        let id = st.id();
        st.statuses.push(StatusEntry {
            id,
            repo: repo_key(repo),
            sha: sha.to_string(),
            status: FakeStatus {
                state: state.to_owned(),
                context: context.to_owned(),
                description: String::new(),
                target_url: None,
            },
            created_at: Utc::now(),
        });
    }

    /// Take back `checks: read`: check-run reads answer 403 as GitHub does.
    pub fn deny_checks(&self) {
        self.state().checks_denied = true;
    }

    /// The repository's clone URL (e.g. a local `file://` repository).
    pub fn set_repo_clone_url(&self, repo: &RepoName, url: &str) {
        if let Some(r) = self.state().repos.get_mut(&repo_key(repo)) {
            r.clone_url = Some(url.to_owned());
        }
    }

    /// Give `login` a permission on `repo` (they become a known user).
    pub fn set_permission(&self, repo: &RepoName, login: &str, permission: Permission) {
        self.state().permissions.insert(
            (repo_key(repo), login.to_ascii_lowercase()),
            (login.to_owned(), permission),
        );
    }

    /// Create or replace a pull request.
    pub fn upsert_pr(&self, repo: &RepoName, pr: FakePr) {
        self.state().prs.insert((repo_key(repo), pr.number.0), pr);
    }

    /// Open, close or merge a pull request. Returns false if there is no such PR.
    pub fn set_pr_state(
        &self,
        repo: &RepoName,
        number: PrNumber,
        open: bool,
        merged: bool,
    ) -> bool {
        match self.state().prs.get_mut(&(repo_key(repo), number.0)) {
            Some(pr) => {
                pr.open = open && !merged;
                pr.merged = merged;
                true
            }
            None => false,
        }
    }

    /// Move a PR's head to a new commit (a push). Returns false if there is no such PR.
    pub fn set_pr_head(&self, repo: &RepoName, number: PrNumber, sha: Sha) -> bool {
        match self.state().prs.get_mut(&(repo_key(repo), number.0)) {
            Some(pr) => {
                pr.head_sha = sha;
                true
            }
            None => false,
        }
    }

    /// A pull request as the fake has it.
    pub fn pr(&self, repo: &RepoName, number: PrNumber) -> Option<FakePr> {
        self.state().prs.get(&(repo_key(repo), number.0)).cloned()
    }

    /// Put a file at `path` in `git_ref` (a commit sha or a branch name).
    pub fn set_file(&self, repo: &RepoName, git_ref: &str, path: &str, content: &str) {
        self.state().files.insert(
            (
                repo_key(repo),
                git_ref.to_owned(),
                path.trim_start_matches('/').to_owned(),
            ),
            content.to_owned(),
        );
    }

    /// The comments on a PR, oldest first.
    pub fn comments(&self, repo: &RepoName, pr: PrNumber) -> Vec<FakeComment> {
        let key = repo_key(repo);
        self.state()
            .comments
            .values()
            .filter(|(r, c)| *r == key && c.pr == pr)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// One comment by id.
    pub fn comment_by_id(&self, id: u64) -> Option<FakeComment> {
        self.state().comments.get(&id).map(|(_, c)| c.clone())
    }

    /// A comment by a person (not the app), e.g. a `/stage` command. Returns its id. The PR is
    /// not required to exist.
    pub fn add_user_comment(&self, repo: &RepoName, pr: PrNumber, login: &str, body: &str) -> u64 {
        let mut st = self.state();
        let id = st.id();
        let now = Utc::now();
        st.comments.insert(
            id,
            (
                repo_key(repo),
                FakeComment {
                    id,
                    pr,
                    author: login.to_owned(),
                    by_app: false,
                    body: body.to_owned(),
                    created_at: now,
                    updated_at: now,
                },
            ),
        );
        id
    }

    /// Delete a comment (as its author can on GitHub). Returns false if there is no such comment.
    pub fn delete_comment(&self, id: u64) -> bool {
        let mut st = self.state();
        st.reactions.remove(&id);
        st.comments.remove(&id).is_some()
    }

    /// The reactions on a comment (`eyes`, `rocket`, `+1`, …), oldest first.
    pub fn reactions(&self, comment_id: u64) -> Vec<String> {
        self.state()
            .reactions
            .get(&comment_id)
            .map(|rs| rs.iter().map(|r| r.content.clone()).collect())
            .unwrap_or_default()
    }

    /// The commit statuses posted on `sha`, oldest first.
    pub fn statuses(&self, repo: &RepoName, sha: &Sha) -> Vec<FakeStatus> {
        let key = repo_key(repo);
        self.state()
            .statuses
            .iter()
            .filter(|s| s.repo == key && s.sha == sha.as_str())
            .map(|s| s.status.clone())
            .collect()
    }

    /// The deployments to `environment`, oldest first.
    /// A deployment created by a user (anyone with write access can), not by the App: its
    /// `performed_via_github_app` is null. It gets one `success` status. Returns its id.
    pub fn add_user_deployment(
        &self,
        repo: &RepoName,
        environment: &str,
        sha: &str,
        payload: serde_json::Value,
    ) -> u64 {
        let mut st = self.state();
        let id = st.id();
        let status_id = st.id();
        let now = Utc::now();
        st.deployments.insert(
            id,
            DeploymentEntry {
                repo: repo_key(repo),
                by_app: false,
                task: "deploy".into(),
                created_at: now,
                deployment: FakeDeployment {
                    id,
                    sha: sha.to_owned(),
                    git_ref: sha.to_owned(),
                    payload,
                    environment: environment.to_owned(),
                    description: String::new(),
                    transient: false,
                    production: environment == "production",
                    statuses: vec![FakeDeploymentStatus {
                        state: "success".into(),
                        environment_url: None,
                        log_url: None,
                        description: String::new(),
                    }],
                },
                status_ids: vec![(status_id, now)],
            },
        );
        id
    }

    pub fn deployments(&self, repo: &RepoName, environment: &str) -> Vec<FakeDeployment> {
        let key = repo_key(repo);
        self.state()
            .deployments
            .values()
            .filter(|d| d.repo == key && d.deployment.environment == environment)
            .map(|d| d.deployment.clone())
            .collect()
    }

    /// Every deployment in `repo`, oldest first.
    pub fn all_deployments(&self, repo: &RepoName) -> Vec<FakeDeployment> {
        let key = repo_key(repo);
        self.state()
            .deployments
            .values()
            .filter(|d| d.repo == key)
            .map(|d| d.deployment.clone())
            .collect()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The requests whose method is `method` and whose path starts with `path_prefix`.
    pub fn requests_to(&self, method: &str, path_prefix: &str) -> Vec<RecordedRequest> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    /// Forget the request log.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Answer the next matching requests with a fault.
    pub fn inject_fault(&self, fault: Fault) {
        if fault.times > 0 {
            self.state().faults.push(fault);
        }
    }

    /// Drop every pending injected fault (GitHub is back).
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Serve the next matching requests but hold their answers back (see [`Stall`]).
    pub fn stall(&self, stall: Stall) {
        if stall.times > 0 {
            self.state().stalls.push(stall);
        }
    }

    /// How many answers are held back right now.
    pub fn stalled(&self) -> usize {
        self.state().stalled
    }

    /// Where redeliveries are POSTed (stagebot's `…/webhook`), signed with `secret`.
    pub fn set_webhook_target(&self, url: &str, secret: &str) {
        self.state().webhook_target = Some(WebhookTarget {
            url: url.to_owned(),
            secret: secret.to_owned(),
        });
    }

    /// Log a delivery the fake "sent" with `guid` and the receiver's answer (`status_code`; 0
    /// for no answer). Returns the log entry's id.
    pub fn record_delivery(
        &self,
        guid: &str,
        event: &str,
        payload: &serde_json::Value,
        status_code: u16,
    ) -> u64 {
        let mut st = self.state();
        log_delivery(&mut st, guid, event, payload, status_code, false)
    }

    /// A delivery "sent" while the receiver was down: logged as failed (no answer), never
    /// actually sent. Returns its GUID.
    pub fn record_failed_delivery(&self, event: &str, payload: &serde_json::Value) -> String {
        let guid = new_guid();
        self.record_delivery(&guid, event, payload, 0);
        guid
    }

    /// The delivery log, oldest first.
    pub fn hook_deliveries(&self) -> Vec<FakeHookDelivery> {
        self.state().hook_log.clone()
    }

    /// Send every held-back answer (to whoever is still listening) and drop pending stalls.
    pub fn release_stalled(&self) {
        self.state().stalls.clear();
        self.shared.released.send_modify(|n| *n += 1);
    }

    /// Every comment the app wrote, in every repository (`owner/name` lowercased, comment),
    /// oldest first: what the test harness checks for replies no test read.
    pub fn app_comments(&self) -> Vec<(String, FakeComment)> {
        self.state()
            .comments
            .values()
            .filter(|(_, c)| c.by_app)
            .cloned()
            .collect()
    }
}

/// A GUID like GitHub's (`X-GitHub-Delivery`).
pub fn new_guid() -> String {
    let hex: String = std::iter::repeat_with(|| fastrand::u8(..))
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn log_delivery(
    st: &mut State,
    guid: &str,
    event: &str,
    payload: &serde_json::Value,
    status_code: u16,
    redelivery: bool,
) -> u64 {
    let id = st.id();
    let status = match status_code {
        0 => "failed to connect to host".to_owned(),
        200..=299 => "OK".to_owned(),
        code => format!("Invalid HTTP Response: {code}"),
    };
    st.hook_log.push(FakeHookDelivery {
        id,
        guid: guid.to_owned(),
        delivered_at: Utc::now(),
        redelivery,
        status_code,
        status,
        event: event.to_owned(),
        action: payload
            .get("action")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        installation_id: payload
            .pointer("/installation/id")
            .and_then(serde_json::Value::as_u64),
        repository_id: payload
            .pointer("/repository/id")
            .and_then(serde_json::Value::as_u64),
        payload: payload.clone(),
    });
    id
}

/// POST a redelivery to the receiver, signed, and log the answer.
pub(crate) async fn send_outgoing(fake: FakeGitHub, out: Outgoing) {
    let body = serde_json::to_vec(&out.payload).unwrap_or_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build();
    let status = match client {
        Ok(client) => match client
            .post(&out.target.url)
            .header("X-GitHub-Event", &out.event)
            .header("X-GitHub-Delivery", &out.guid)
            .header(
                "X-Hub-Signature-256",
                crate::webhook::sign(&out.target.secret, &body),
            )
            .header("Content-Type", "application/json")
            .header("User-Agent", "GitHub-Hookshot/fake")
            .body(body)
            .send()
            .await
        {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => {
                tracing::debug!(error = %e, "fake GitHub: redelivery failed");
                0
            }
        },
        Err(_) => 0,
    };
    let mut st = fake.state();
    log_delivery(&mut st, &out.guid, &out.event, &out.payload, status, true);
}
