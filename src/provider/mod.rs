//! Providers make environments real (DESIGN §5). Two are built in: `local` (embedded, default)
//! and `command` (operator scripts). A plain enum keeps dispatch obvious.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::types::{EnvId, EnvKind, PrNumber, Secret, Sha};

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
}

impl DeploySpec {
    /// The `STAGEBOT_*` variables every environment's processes get (DESIGN §5).
    pub fn stagebot_vars(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert(
            "STAGEBOT_ENV".into(),
            format!("{}/{}", self.kind, self.env.slug),
        );
        v.insert("STAGEBOT_SLUG".into(), self.env.slug.to_string());
        v.insert("STAGEBOT_KIND".into(), self.kind.to_string());
        v.insert("STAGEBOT_REPO".into(), self.env.repo.to_string());
        v.insert("STAGEBOT_BRANCH".into(), self.branch.clone());
        v.insert("STAGEBOT_SHA".into(), self.sha.to_string());
        v.insert(
            "STAGEBOT_PR".into(),
            self.pr.map(|p| p.to_string()).unwrap_or_default(),
        );
        v.insert("STAGEBOT_RELEASE".into(), self.release.to_string());
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
