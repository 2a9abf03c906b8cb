//! Providers make environments real (docs/providers.md). Two are built in: `local` (embedded, default)
//! and `command` (operator scripts). A plain enum keeps dispatch obvious.

pub mod artifact;
pub mod command;
pub mod local;
pub mod memory;
pub(crate) mod process;
pub mod sandbox;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{EnvId, EnvKind, PrNumber, Secret, Sha};

pub use command::{CommandConfig, CommandProvider};
pub use local::{LocalConfig, LocalProvider};

/// The configured provider. A plain enum: two built-ins, dispatch by `match`.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Embedded: processes on this machine behind the built-in proxy.
    Local(LocalProvider),
    /// Operator scripts (Kubernetes, Terraform, a PaaS…).
    Command(CommandProvider),
    /// Nothing runs: deploys and teardowns recorded in memory, with outcomes a test controls
    /// (tests of engine and runner stories).
    Memory(memory::MemoryProvider),
}

impl Provider {
    /// `local` or `command`, for logs and the dashboard.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Local(_) => "local",
            Provider::Command(_) => "command",
            Provider::Memory(_) => "memory",
        }
    }

    /// Make `spec.sha` the live release of `spec.env`. Dropping the future cancels the deploy
    /// (its processes are killed) and leaves the previous release serving.
    pub async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, ProviderError> {
        match self {
            Provider::Local(p) => p.deploy(spec).await,
            Provider::Command(p) => p.deploy(spec).await,
            Provider::Memory(p) => p.deploy(spec).await,
        }
    }

    /// Remove the environment. Tearing down an environment that is not running is not an error.
    pub async fn teardown(&self, spec: &TeardownSpec) -> Result<(), ProviderError> {
        match self {
            Provider::Local(p) => p.teardown(spec).await,
            Provider::Command(p) => p.teardown(spec).await,
            Provider::Memory(p) => p.teardown(spec).await,
        }
    }

    /// At start-up: take over the processes of `live` releases a previous stagebot left running
    /// and stop every other process it left behind (the local provider; the command provider's
    /// environments live elsewhere and need nothing).
    pub async fn adopt(&self, live: &[local::LiveRelease]) -> local::AdoptSummary {
        match self {
            Provider::Local(p) => p.adopt(live).await,
            Provider::Command(_) | Provider::Memory(_) => local::AdoptSummary::default(),
        }
    }

    /// The provider's own readiness checks for `/readyz` and the dashboard (the local
    /// provider's `sandbox` and `limits`); a failed check is a warning, not "not ready".
    pub fn checks(&self) -> Vec<(&'static str, sandbox::Check)> {
        match self {
            Provider::Local(p) => p.checks(),
            Provider::Command(_) | Provider::Memory(_) => Vec::new(),
        }
    }

    /// What the provider sees for `env` right now.
    pub async fn status(&self, env: &EnvId) -> Result<ProviderStatus, ProviderError> {
        match self {
            Provider::Local(p) => Ok(p.status(env)),
            Provider::Command(p) => p.status(env).await,
            Provider::Memory(p) => Ok(p.status(env)),
        }
    }
}

/// Why a provider could not do what was asked. `Config` and `Deploy` messages are written for
/// the PR author; `log_tail()` gives the end of the release log when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The repository or provider configuration is missing something or invalid.
    #[error("{0}")]
    Config(String),
    /// Fetching or checking out the commit failed.
    #[error("git: {0}")]
    Git(String),
    /// A step (build, seed, start, health check, deploy script) failed.
    #[error("{message}")]
    Deploy {
        /// What failed, e.g. "`build` exited with status 2".
        message: String,
        /// The last lines of the release log.
        log_tail: String,
    },
    /// A step ran out of time; its processes were killed.
    #[error("{step} timed out after {}", process::human(*.after))]
    Timeout {
        /// `build`, `seed`, `deploy script`, …
        step: String,
        /// The limit that was hit.
        after: Duration,
        /// The last lines of the release log.
        log_tail: String,
    },
    /// The machine stagebot runs on failed us (disk, process spawning…).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ProviderError {
    /// The end of the release log, when the error comes with one.
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            ProviderError::Deploy { log_tail, .. } | ProviderError::Timeout { log_tail, .. } => {
                Some(log_tail)
            }
            _ => None,
        }
    }
}

/// How many log lines a failure quotes.
pub const LOG_TAIL_LINES: usize = 30;

/// Everything a provider needs to deploy one release of one environment.
#[derive(Debug, Clone)]
pub struct DeploySpec {
    pub env: EnvId,
    pub kind: EnvKind,
    /// The branch (or `main` for production) the commit came from.
    pub branch: String,
    pub sha: Sha,
    pub pr: Option<PrNumber>,
    /// The release number this deploy will become (1-based).
    pub release: u32,
    /// The commit of the release currently live, if any.
    pub previous_sha: Option<Sha>,
    /// `https://…` clone URL, a local path or a `file://` URL.
    pub clone_url: String,
    /// Installation token for HTTPS clone URLs; never logged.
    pub clone_token: Option<Secret>,
    /// The host the built-in proxy routes to this environment, e.g.
    /// `pr-42-login--webapp.localhost:3000`.
    pub host: String,
    /// The public URL of the environment, e.g. `http://pr-42-login--webapp.localhost:3000`.
    pub public_url: String,
    /// `/stage <profile>`: a named override set from the repo config.
    pub profile: Option<String>,
    /// True on the environment's first deploy (the `seed` hook runs then).
    pub first_deploy: bool,
    /// Extra variables from the operator; the provider adds STAGEBOT_* and the repo config's.
    pub vars: BTreeMap<String, String>,
    /// Where this release's build/start output goes (the provider appends to it).
    pub log_path: PathBuf,
    /// `STAGEBOT_ARTIFACT`: `<slug>-<release>` of the release this commit was first deployed
    /// as in the repository (this deploy's own when it is the first), so a script can re-tag
    /// what it built then instead of building again.
    pub artifact: String,
}

impl DeploySpec {
    /// The `STAGEBOT_*` variables every environment's processes get (docs/providers.md).
    pub fn stagebot_vars(&self) -> BTreeMap<String, String> {
        let mut v = identity_vars(&self.env, self.kind, &self.branch, Some(&self.sha), self.pr);
        v.insert("STAGEBOT_RELEASE".into(), self.release.to_string());
        v.insert("STAGEBOT_ARTIFACT".into(), self.artifact.clone());
        v.insert(
            "STAGEBOT_PREVIOUS_SHA".into(),
            self.previous_sha
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        );
        v.insert("STAGEBOT_URL".into(), self.public_url.clone());
        v.insert("STAGEBOT_HOST".into(), self.host.clone());
        v
    }
}

/// What a successful deploy reports back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub url: String,
    /// The local provider started from a kept build: "reused artifact of release #n (env)".
    pub artifact: Option<String>,
}

/// What is needed to tear an environment down.
#[derive(Debug, Clone)]
pub struct TeardownSpec {
    pub env: EnvId,
    pub kind: EnvKind,
    pub branch: String,
    pub sha: Option<Sha>,
    pub pr: Option<PrNumber>,
    pub log_path: PathBuf,
}

impl TeardownSpec {
    /// The `STAGEBOT_*` variables a teardown sees (the same identity as its deploys).
    pub fn stagebot_vars(&self) -> BTreeMap<String, String> {
        identity_vars(
            &self.env,
            self.kind,
            &self.branch,
            self.sha.as_ref(),
            self.pr,
        )
    }
}

/// The variables that say which environment a process belongs to (docs/providers.md), so apps can tag
/// their errors and metrics per environment.
fn identity_vars(
    env: &EnvId,
    kind: EnvKind,
    branch: &str,
    sha: Option<&Sha>,
    pr: Option<PrNumber>,
) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert(
        "STAGEBOT_ENV".into(),
        crate::types::environment_name(kind, &env.slug),
    );
    v.insert("STAGEBOT_SLUG".into(), env.slug.to_string());
    v.insert("STAGEBOT_KIND".into(), kind.to_string());
    v.insert("STAGEBOT_REPO".into(), env.repo.to_string());
    v.insert("STAGEBOT_BRANCH".into(), branch.to_owned());
    v.insert(
        "STAGEBOT_SHA".into(),
        sha.map(ToString::to_string).unwrap_or_default(),
    );
    v.insert(
        "STAGEBOT_PR".into(),
        pr.map(|p| p.to_string()).unwrap_or_default(),
    );
    v
}

/// What a provider can tell about an environment right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProviderStatus {
    Running {
        url: String,
    },
    Stopped,
    /// The provider cannot tell (the command provider has no status script).
    Unknown,
}
