//! The repository's own configuration, `.github/stagebot.yml` at the deployed commit (docs/configuration.md).
//!
//! ```yaml
//! build: make build              # optional, run once per release in the checkout
//! start: ./server --port "$PORT" # required for the local provider
//! health: /healthz               # default "/"
//! env: { KEY: value }            # for every environment
//! migrate: ./migrate.sh          # every deploy, after build (and the database clone), before seed/start
//! seed: ./seed.sh                # once, on an environment's first deploy (after build, before start)
//! postdeploy: ./notify.sh        # after the release is healthy
//! predestroy: ./dump.sh          # before teardown (best effort)
//! timeouts: { build: 10m, health: 2m }
//! preview:    { auto: true, ttl: 3d, env: {}, profiles: { lite: { env: {}, build: …, start: … } } }
//! staging:    { env: {} }
//! production: { permission: maintain, env: {} }
//! on_merge: production           # production | staging | none (read on the default branch)
//! branches: ["release/*"]        # branches that get an environment without a PR
//! database:   { postgres: { snapshot: webapp_snapshot, env: DATABASE_URL, anonymize: db/anonymize.sql } }
//! sentry:     { dsn: https://key@o1.ingest.sentry.io/2 }
//! ```
//!
//! Every map rejects unknown keys, so a typo is an error the PR author sees rather than a setting
//! silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::types::{EnvKind, Permission};

/// Where the configuration lives in a repository.
pub const CONFIG_PATH: &str = ".github/stagebot.yml";

/// A configuration that cannot be used, with a message meant for the PR author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The YAML does not parse or does not match the schema.
    #[error("{CONFIG_PATH}: {message}")]
    Invalid {
        /// What is wrong, with the line and column when known.
        message: String,
        /// 1-based line of the problem, when known.
        line: Option<u64>,
        /// 1-based column of the problem, when known.
        column: Option<u64>,
    },
    /// `/stage <profile>` named a profile the configuration does not define.
    #[error("unknown profile `{name}`: {}", known_profiles(.known))]
    UnknownProfile {
        /// The requested profile.
        name: String,
        /// The profiles `preview.profiles` defines.
        known: Vec<String>,
    },
}

fn known_profiles(known: &[String]) -> String {
    if known.is_empty() {
        format!("{CONFIG_PATH} defines no profiles (add them under `preview.profiles`)")
    } else {
        format!("known profiles are {}", known.join(", "))
    }
}

/// `.github/stagebot.yml`, parsed, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepoConfig {
    /// Shell command run once per release in the checkout.
    pub build: Option<String>,
    /// Shell command that serves the app on `$PORT` (required by the local provider).
    pub start: Option<String>,
    /// Path answered with 2xx when the app is ready.
    pub health: HealthPath,
    /// Variables for every environment.
    pub env: EnvVars,
    /// Hook run on every deploy, after build (and the database clone) and before seed and start.
    pub migrate: Option<String>,
    /// Hook run once, on an environment's first deploy, after build and before start.
    pub seed: Option<String>,
    /// Hook run after a release is healthy and routed.
    pub postdeploy: Option<String>,
    /// Hook run before teardown (best effort).
    pub predestroy: Option<String>,
    /// Step timeouts; the provider's defaults apply when unset.
    pub timeouts: Timeouts,
    /// Preview environments (one per PR/branch).
    pub preview: PreviewConfig,
    /// The shared staging environment.
    pub staging: StagingConfig,
    /// The production environment.
    pub production: ProductionConfig,
    /// A database per environment (a product rule: read on the default branch).
    pub database: DatabaseConfig,
    /// Error tracking (Sentry).
    pub sentry: SentryConfig,
    /// What a push to the default branch deploys (read on the default branch); unset means
    /// `production`, or `none` with the deprecated `production.deploy_on_merge: false`.
    pub on_merge: Option<OnMerge>,
    /// Glob patterns of branches that get an environment of their own without a pull request
    /// (read on the default branch): `*` within one path segment, `**` across segments.
    #[serde(deserialize_with = "branch_patterns")]
    pub branches: Vec<String>,
}

/// `require_checks`: which CI results a deploy waits for. Never counts stagebot's own
/// `stagebot/*` statuses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiGate {
    /// `true`: at least one check run or status exists, and all are complete and successful.
    All,
    /// A list: each named check run or status exists and succeeded.
    Named(Vec<String>),
}

/// `on_merge`: where a push to the default branch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMerge {
    /// Deploy production (the default).
    #[default]
    Production,
    /// Deploy staging; production moves only by promotion.
    Staging,
    /// Deploy nothing.
    None,
}

impl OnMerge {
    /// The setting's word, as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnMerge::Production => "production",
            OnMerge::Staging => "staging",
            OnMerge::None => "none",
        }
    }
}

/// `database:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// A PostgreSQL database per environment, on the server's `STAGEBOT_POSTGRES_URL`.
    pub postgres: Option<PostgresConfig>,
}

/// `database.postgres:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// The template database cloned for each environment (none: an empty database). Must be
    /// named `<repo>_…` or be listed in the server's `STAGEBOT_POSTGRES_TEMPLATES`.
    pub snapshot: Option<String>,
    /// The variable the app receives the database URL in (default `DATABASE_URL`).
    pub env: EnvName,
    /// An SQL file in the repository that `stagebot snapshot` runs on a new snapshot.
    pub anonymize: Option<String>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            snapshot: None,
            env: EnvName("DATABASE_URL".to_owned()),
            anonymize: None,
        }
    }
}

/// `preview.profiles.<name>.database`: whether the environment gets a database of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseMode {
    /// A database of its own (the default).
    #[default]
    Own,
    /// Staging's database; nothing is created or dropped.
    Shared,
}

/// `sentry:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentryConfig {
    /// The DSN every environment receives in `SENTRY_DSN` (the server's `SENTRY_DSN` wins).
    pub dsn: Option<String>,
}

/// Environment variables, in a deterministic order. Values may be any YAML scalar; they are
/// passed on as the text written (`yes`, `1.50`, `0x10` unchanged).
pub type EnvVars = BTreeMap<EnvName, EnvValue>;

/// The health-check path: starts with `/`, defaults to `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPath(String);

impl HealthPath {
    /// The path, e.g. `/healthz`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for HealthPath {
    fn default() -> Self {
        Self("/".to_owned())
    }
}

impl<'de> Deserialize<'de> for HealthPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/') || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(serde::de::Error::custom(format!(
                "health must be a path starting with `/`, like `/healthz` (got {s:?})"
            )));
        }
        Ok(Self(s))
    }
}

/// A valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, not `PORT` and not `STAGEBOT_*`
/// (stagebot sets those).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvName(String);

impl EnvName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut chars = s.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "invalid environment variable name {s:?}: expected letters, digits and `_`"
            )));
        }
        if s == "PORT" || s.starts_with("STAGEBOT_") {
            return Err(serde::de::Error::custom(format!(
                "environment variable {s} is set by stagebot and cannot be configured"
            )));
        }
        Ok(Self(s))
    }
}

/// An environment variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue(String);

impl EnvValue {
    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Plain scalars keep their text exactly as written: `yes`, `1.50` and `0x10` stay
        // themselves instead of turning into a boolean or a number first.
        String::deserialize(d).map(Self)
    }
}

/// Step timeouts. Unset means "the provider's default" (10 min build, 2 min health).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Limit for `build` (and for the hooks).
    #[serde(deserialize_with = "opt_duration")]
    pub build: Option<Duration>,
    /// How long `start` may take to answer the health path.
    #[serde(deserialize_with = "opt_duration")]
    pub health: Option<Duration>,
}

/// `preview:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreviewConfig {
    /// Create a preview when a PR opens (default true); otherwise `/stage` does.
    pub auto: bool,
    /// Idle time after which a preview is torn down (default 3 days).
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Variables for previews only.
    pub env: EnvVars,
    /// Named override sets selected with `/stage <profile>`.
    pub profiles: BTreeMap<String, Profile>,
    /// CI gate for preview deploys (read on the default branch; off by default).
    #[serde(deserialize_with = "require_checks")]
    pub require_checks: Option<CiGate>,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        Self {
            auto: true,
            ttl: Duration::from_secs(3 * 24 * 3600),
            env: EnvVars::new(),
            profiles: BTreeMap::new(),
            require_checks: None,
        }
    }
}

/// A named override set (`preview.profiles.<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Variables layered over the global and preview ones.
    pub env: EnvVars,
    /// Replaces the top-level `build`.
    pub build: Option<String>,
    /// Replaces the top-level `start`.
    pub start: Option<String>,
    /// Replaces the top-level `health`.
    pub health: Option<HealthPath>,
    /// `shared`: use staging's database instead of one of its own (read on the default branch).
    pub database: DatabaseMode,
}

/// `staging:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagingConfig {
    /// Variables for staging only.
    pub env: EnvVars,
    /// CI gate for staging deploys (read on the default branch; off by default).
    #[serde(deserialize_with = "require_checks")]
    pub require_checks: Option<CiGate>,
}

/// `production:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProductionConfig {
    /// Deprecated alias: `false` means `on_merge: none` (unset: see [`RepoConfig::on_merge`]).
    pub deploy_on_merge: Option<bool>,
    /// Who may `/promote production` or `/rollback production` (default maintain).
    #[serde(deserialize_with = "permission")]
    pub permission: Permission,
    /// Variables for production only.
    pub env: EnvVars,
    /// CI gate for production deploys (read on the default branch; off by default).
    #[serde(deserialize_with = "require_checks")]
    pub require_checks: Option<CiGate>,
}

impl Default for ProductionConfig {
    fn default() -> Self {
        Self {
            deploy_on_merge: None,
            permission: Permission::Maintain,
            env: EnvVars::new(),
            require_checks: None,
        }
    }
}

/// The settings one environment's deploy uses, after layering global, kind and profile values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Build command, if any.
    pub build: Option<String>,
    /// Start command, if any (the local provider requires one).
    pub start: Option<String>,
    /// Health path, e.g. `/healthz`.
    pub health: String,
    /// Global env, then the kind's env, then the profile's env.
    pub env: BTreeMap<String, String>,
    /// `migrate` hook.
    pub migrate: Option<String>,
    /// The top-level `env` alone: all that `build` sees of the repository's variables (a
    /// build is shared by every environment of its commit).
    pub base_env: BTreeMap<String, String>,
    /// `seed` hook.
    pub seed: Option<String>,
    /// `sentry.dsn`, if set.
    pub sentry_dsn: Option<String>,
    /// `postdeploy` hook.
    pub postdeploy: Option<String>,
    /// `predestroy` hook.
    pub predestroy: Option<String>,
    /// `timeouts.build`, if set.
    pub build_timeout: Option<Duration>,
    /// `timeouts.health`, if set.
    pub health_timeout: Option<Duration>,
}

/// Parse `.github/stagebot.yml`. An empty file is the default configuration.
pub fn parse(yaml: &str) -> Result<RepoConfig, ConfigError> {
    if yaml.trim().is_empty() {
        return Ok(RepoConfig::default());
    }
    let config = serde_saphyr::from_str::<RepoConfig>(yaml).map_err(|e| from_yaml_error(&e))?;
    // `/stage <word>` reads a word of hex digits as a commit: such a profile could never be
    // selected, or would be mistaken for a commit.
    if let Some(name) = config
        .preview
        .profiles
        .keys()
        .find(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ConfigError::Invalid {
            message: format!(
                "profile name `{name}` under `preview.profiles` is all hex digits, which `/stage` reads as a commit: give it a name with another letter (e.g. `p-{name}`)"
            ),
            line: None,
            column: None,
        });
    }
    Ok(config)
}

fn from_yaml_error(err: &serde_saphyr::Error) -> ConfigError {
    let err = err.without_snippet();
    let loc = err.location().filter(|l| l.line() > 0);
    let (line, column) = (loc.map(|l| l.line()), loc.map(|l| l.column()));
    let at = match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        _ => String::new(),
    };
    let message = match err {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => format!(
            "unknown key `{field}`{at} — expected one of {}",
            expected.join(", ")
        ),
        other => {
            let opts = serde_saphyr::render_options! {
                formatter: &serde_saphyr::UserMessageFormatter,
                snippets: serde_saphyr::SnippetMode::Off,
            };
            let text = other.render_with_options(opts);
            // The rendered text may end with its own location suffix; keep one, ours.
            let text = text.trim_end();
            let text = text.strip_suffix(at.as_str()).unwrap_or(text);
            match (line, column) {
                (Some(l), Some(c)) => format!("{text} (line {l}, column {c})"),
                _ => text.to_owned(),
            }
        }
    };
    ConfigError::Invalid {
        message,
        line,
        column,
    }
}

impl RepoConfig {
    /// What a push to the default branch deploys: `on_merge`, else `none` when the deprecated
    /// `production.deploy_on_merge` is `false`, else `production`.
    pub fn on_merge(&self) -> OnMerge {
        match (self.on_merge, self.production.deploy_on_merge) {
            (Some(o), _) => o,
            (None, Some(false)) => OnMerge::None,
            (None, _) => OnMerge::Production,
        }
    }

    /// Settings that work but should be changed (`stagebot check-config` prints them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(old) = self.production.deploy_on_merge {
            let now = if old { "production" } else { "none" };
            out.push(match self.on_merge {
                Some(o) => format!(
                    "`production.deploy_on_merge` is deprecated and ignored here: `on_merge: {}` is set; remove `deploy_on_merge`",
                    o.as_str()
                ),
                None => format!(
                    "`production.deploy_on_merge` is deprecated: write `on_merge: {now}` (a top-level key) instead"
                ),
            });
        }
        out
    }

    /// The CI gate deploys of `kind` wait for, if any.
    pub fn require_checks(&self, kind: EnvKind) -> Option<&CiGate> {
        match kind {
            EnvKind::Preview => self.preview.require_checks.as_ref(),
            EnvKind::Staging => self.staging.require_checks.as_ref(),
            EnvKind::Production => self.production.require_checks.as_ref(),
        }
    }

    /// Does `branch` match one of the `branches` patterns?
    pub fn branch_matches(&self, branch: &str) -> bool {
        self.branches.iter().any(|p| glob_match(p, branch))
    }

    /// The settings for one environment kind and optional profile: global values, then the
    /// kind's `env`, then the profile's overrides. Profiles live under `preview.profiles`; an
    /// unknown profile is an error listing the known ones.
    pub fn effective(
        &self,
        kind: EnvKind,
        profile: Option<&str>,
    ) -> Result<Effective, ConfigError> {
        let base_env: BTreeMap<String, String> = self
            .env
            .iter()
            .map(|(k, v)| (k.0.clone(), v.0.clone()))
            .collect();
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut layer = |vars: &EnvVars| {
            for (k, v) in vars {
                env.insert(k.0.clone(), v.0.clone());
            }
        };
        layer(&self.env);
        layer(match kind {
            EnvKind::Preview => &self.preview.env,
            EnvKind::Staging => &self.staging.env,
            EnvKind::Production => &self.production.env,
        });
        let mut build = self.build.clone();
        let mut start = self.start.clone();
        let mut health = self.health.0.clone();
        if let Some(name) = profile {
            let Some(p) = self.preview.profiles.get(name) else {
                return Err(ConfigError::UnknownProfile {
                    name: name.to_owned(),
                    known: self.preview.profiles.keys().cloned().collect(),
                });
            };
            layer(&p.env);
            if p.build.is_some() {
                build.clone_from(&p.build);
            }
            if p.start.is_some() {
                start.clone_from(&p.start);
            }
            if let Some(h) = &p.health {
                health.clone_from(&h.0);
            }
        }
        Ok(Effective {
            build,
            start,
            health,
            env,
            migrate: self.migrate.clone(),
            base_env,
            seed: self.seed.clone(),
            sentry_dsn: self.sentry.dsn.clone(),
            postdeploy: self.postdeploy.clone(),
            predestroy: self.predestroy.clone(),
            build_timeout: self.timeouts.build,
            health_timeout: self.timeouts.health,
        })
    }
}

/// `require_checks:` `true`, `false`, or a non-empty list of check/status names.
fn require_checks<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CiGate>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Names(Vec<String>),
    }
    let raw = Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "require_checks must be true, false, or a list of check or status names",
        )
    })?;
    match raw {
        Raw::Flag(false) => Ok(None),
        Raw::Flag(true) => Ok(Some(CiGate::All)),
        Raw::Names(names) => {
            if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
                return Err(serde::de::Error::custom(
                    "require_checks lists no names (or an empty one): use true for every check, or name them",
                ));
            }
            if let Some(n) = names.iter().find(|n| n.starts_with("stagebot/")) {
                return Err(serde::de::Error::custom(format!(
                    "require_checks cannot name {n:?}: stagebot's own statuses never count"
                )));
            }
            Ok(Some(CiGate::Named(names)))
        }
    }
}

/// `branches:` patterns: non-empty, without whitespace or control characters.
fn branch_patterns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for p in &list {
        if p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(serde::de::Error::custom(format!(
                "invalid branch pattern {p:?}: expected a glob like `release/*` or `qa/**`"
            )));
        }
    }
    Ok(list)
}

/// Branch glob: `**` matches any characters (`/` included), `*` any characters but `/`, `?`
/// one character but `/`; everything else matches itself. A pattern ending in `/**` also
/// matches the bare prefix's children only (`qa/**` matches `qa/x` and `qa/x/y`, not `qa`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p {
            [] => t.is_empty(),
            ['*', '*', rest @ ..] => (0..=t.len()).any(|i| go(rest, &t[i..])),
            ['*', rest @ ..] => {
                let mut i = 0;
                loop {
                    if go(rest, &t[i..]) {
                        return true;
                    }
                    if i == t.len() || t[i] == '/' {
                        return false;
                    }
                    i += 1;
                }
            }
            ['?', rest @ ..] => t.first().is_some_and(|c| *c != '/') && go(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// `production.permission`: write, maintain or admin. Anything weaker would let people who
/// cannot push to the repository deploy production, so it is refused.
fn permission<'de, D: Deserializer<'de>>(d: D) -> Result<Permission, D::Error> {
    let s = String::deserialize(d)?;
    match s.parse::<Permission>() {
        Ok(p) if p >= Permission::Write => Ok(p),
        _ => Err(serde::de::Error::custom(format!(
            "invalid permission {s:?}: expected write, maintain or admin"
        ))),
    }
}

/// `30s`, `90m`, `12h`, `3d`, `1w`, `1d 12h`: the same syntax as `/extend` and the server's
/// duration settings (one parser, [`crate::command::parse_duration`]).
fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::command::parse_duration(s).ok_or_else(|| {
        format!("invalid duration {s:?}: expected a positive number and a unit, like 90m, 12h, 3d, 1w or 1d 12h")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(yaml: &str) -> String {
        match parse(yaml) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("expected an error, got {c:?}"),
        }
    }

    #[test]
    fn empty_file_and_empty_map_are_defaults() {
        assert_eq!(parse("").unwrap(), RepoConfig::default());
        assert_eq!(parse("# nothing\n").unwrap(), RepoConfig::default());
        assert_eq!(parse("{}").unwrap(), RepoConfig::default());
    }

    #[test]
    fn defaults() {
        let c = RepoConfig::default();
        assert!(c.preview.auto);
        assert_eq!(c.preview.ttl, Duration::from_secs(3 * 86_400));
        assert_eq!(c.health.as_str(), "/");
        assert_eq!(c.on_merge(), OnMerge::Production);
        assert!(c.branches.is_empty());
        assert!(c.warnings().is_empty());
        assert_eq!(c.production.permission, Permission::Maintain);
        assert_eq!(c.start, None);
        assert_eq!(c.timeouts, Timeouts::default());
    }

    #[test]
    fn full_example_parses() {
        let yaml = r#"
build: make build
start: ./server --port "$PORT"
health: /healthz
env: { RUST_LOG: info, WORKERS: 4, DEBUG: false, NORWAY: no, RATIO: 1.50 }
seed: ./seed.sh
postdeploy: ./notify.sh
predestroy: ./dump.sh
timeouts: { build: 10m, health: 90s }
preview:
  auto: false
  ttl: 1w
  env: { MODE: preview }
  profiles:
    lite: { env: { MODE: lite }, start: ./server --lite }
    full: { build: make full }
staging: { env: { MODE: staging } }
production: { deploy_on_merge: false, permission: admin, env: { MODE: prod } }
"#;
        let c = parse(yaml).unwrap();
        assert_eq!(c.build.as_deref(), Some("make build"));
        assert_eq!(c.start.as_deref(), Some("./server --port \"$PORT\""));
        assert_eq!(c.health.as_str(), "/healthz");
        assert_eq!(c.timeouts.build, Some(Duration::from_secs(600)));
        assert_eq!(c.timeouts.health, Some(Duration::from_secs(90)));
        assert!(!c.preview.auto);
        assert_eq!(c.preview.ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(c.preview.profiles.len(), 2);
        assert_eq!(c.on_merge(), OnMerge::None);
        assert_eq!(c.production.permission, Permission::Admin);

        let e = c.effective(EnvKind::Preview, None).unwrap();
        assert_eq!(e.env["WORKERS"], "4");
        assert_eq!(e.env["DEBUG"], "false");
        assert_eq!(e.env["NORWAY"], "no");
        assert_eq!(e.env["RATIO"], "1.50");
        assert_eq!(e.env["MODE"], "preview");
        assert_eq!(e.seed.as_deref(), Some("./seed.sh"));
        assert_eq!(
            c.effective(EnvKind::Staging, None).unwrap().env["MODE"],
            "staging"
        );
        assert_eq!(
            c.effective(EnvKind::Production, None).unwrap().env["MODE"],
            "prod"
        );
    }

    #[test]
    fn profiles_override_in_order() {
        let c = parse(
            "build: b\nstart: s\nhealth: /h\nenv: {A: global, B: global}\n\
             preview: { env: {B: preview, C: preview}, profiles: { lite: { env: {C: lite}, start: s2, health: /lite } } }",
        )
        .unwrap();
        let e = c.effective(EnvKind::Preview, Some("lite")).unwrap();
        assert_eq!(e.build.as_deref(), Some("b"));
        assert_eq!(e.start.as_deref(), Some("s2"));
        assert_eq!(e.health, "/lite");
        assert_eq!(
            e.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            ["A=global", "B=preview", "C=lite"]
        );
        let plain = c.effective(EnvKind::Preview, None).unwrap();
        assert_eq!(plain.start.as_deref(), Some("s"));
        assert_eq!(plain.health, "/h");
    }

    #[test]
    fn profile_names_may_not_be_all_hex() {
        for name in ["abc1234", "beef", "42", "DEADBEEF"] {
            let e = invalid(&format!("preview: {{ profiles: {{ {name}: {{}} }} }}"));
            assert!(e.contains("all hex digits"), "{name}: {e}");
        }
        for name in ["lite", "abc123x", "x1", "full-2"] {
            let c = parse(&format!("preview: {{ profiles: {{ {name}: {{}} }} }}")).unwrap();
            assert!(c.preview.profiles.contains_key(name), "{name}");
        }
    }

    #[test]
    fn unknown_profile_lists_known_ones() {
        let c = parse("preview: { profiles: { lite: {}, full: {} } }").unwrap();
        let err = c.effective(EnvKind::Preview, Some("huge")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown profile `huge`: known profiles are full, lite"
        );
        let none = RepoConfig::default()
            .effective(EnvKind::Preview, Some("lite"))
            .unwrap_err();
        assert!(none.to_string().contains("defines no profiles"), "{none}");
    }

    #[test]
    fn unknown_key_names_line_and_expected_keys() {
        let err = parse("start: ./run\nbiuld: make\n").unwrap_err();
        let ConfigError::Invalid { message, line, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*line, Some(2));
        assert!(
            message.starts_with(
                "unknown key `biuld` at line 2, column 1 — expected one of build, start, health"
            ),
            "{message}"
        );
        let nested = invalid("preview:\n  auto: true\n  tll: 3d\n");
        assert!(nested.contains("unknown key `tll` at line 3"), "{nested}");
        assert!(
            nested.contains("expected one of auto, ttl, env, profiles"),
            "{nested}"
        );
    }

    #[test]
    fn bad_values_are_explained() {
        let d = invalid("preview: { ttl: 3 fortnights }");
        assert!(d.contains("invalid duration \"3 fortnights\""), "{d}");
        assert!(d.contains("line 1"), "{d}");
        let p = invalid("production:\n  permission: owner\n");
        assert!(p.contains("invalid permission \"owner\""), "{p}");
        assert!(p.contains("line 2"), "{p}");
        for weak in ["none", "read", "triage"] {
            let w = invalid(&format!("production:\n  permission: {weak}\n"));
            assert!(w.contains("expected write, maintain or admin"), "{w}");
        }
        let h = invalid("health: healthz");
        assert!(h.contains("starting with `/`"), "{h}");
        let e = invalid("env: { PORT: 80 }");
        assert!(e.contains("set by stagebot"), "{e}");
        let n = invalid("env: { 'A-B': x }");
        assert!(n.contains("invalid environment variable name"), "{n}");
        let t = invalid("auto: [1, 2");
        assert!(t.starts_with(".github/stagebot.yml: "), "{t}");
        let wrong_type = invalid("build: [make, test]");
        assert!(wrong_type.contains("line 1"), "{wrong_type}");
    }

    #[test]
    fn on_merge_and_its_deprecated_alias() {
        let c = parse("on_merge: staging\n").unwrap();
        assert_eq!(c.on_merge(), OnMerge::Staging);
        assert!(c.warnings().is_empty());
        assert_eq!(parse("on_merge: none").unwrap().on_merge(), OnMerge::None);
        let old = parse("production: { deploy_on_merge: false }").unwrap();
        assert_eq!(old.on_merge(), OnMerge::None);
        assert_eq!(
            old.warnings(),
            [
                "`production.deploy_on_merge` is deprecated: write `on_merge: none` (a top-level key) instead"
            ]
        );
        let on = parse("production: { deploy_on_merge: true }").unwrap();
        assert_eq!(on.on_merge(), OnMerge::Production);
        assert_eq!(on.warnings().len(), 1);
        let both = parse("on_merge: staging\nproduction: { deploy_on_merge: false }").unwrap();
        assert_eq!(both.on_merge(), OnMerge::Staging);
        assert!(
            both.warnings()[0].contains("ignored here"),
            "{:?}",
            both.warnings()
        );
        let bad = invalid("on_merge: prod");
        assert!(bad.contains("prod"), "{bad}");
    }

    #[test]
    fn require_checks_is_a_flag_or_names() {
        let c = parse(
            "staging: { require_checks: true }\nproduction: { require_checks: [test, lint] }\npreview: { require_checks: false }\n",
        )
        .unwrap();
        assert_eq!(c.require_checks(EnvKind::Staging), Some(&CiGate::All));
        assert_eq!(
            c.require_checks(EnvKind::Production),
            Some(&CiGate::Named(vec!["test".into(), "lint".into()]))
        );
        assert_eq!(c.require_checks(EnvKind::Preview), None);
        assert_eq!(
            RepoConfig::default().require_checks(EnvKind::Production),
            None
        );
        for bad in [
            "production: { require_checks: [] }",
            "production: { require_checks: yes-please }",
            "production: { require_checks: [\"stagebot/production\"] }",
        ] {
            let e = invalid(bad);
            assert!(e.contains("require_checks"), "{bad}: {e}");
        }
    }

    #[test]
    fn branch_patterns_match_like_globs() {
        let c = parse("branches: [\"release/*\", \"qa/**\", \"hotfix-?\"]").unwrap();
        for yes in ["release/1.2", "release/x", "qa/a", "qa/a/b/c", "hotfix-1"] {
            assert!(c.branch_matches(yes), "{yes}");
        }
        for no in [
            "release/1/2",
            "release",
            "qa",
            "main",
            "hotfix-12",
            "xrelease/1",
        ] {
            assert!(!c.branch_matches(no), "{no}");
        }
        assert!(glob_match("**", "a/b"));
        assert!(glob_match("feat*", "feature"));
        assert!(!glob_match("feat*", "feat/x"));
        let e = invalid("branches: [\"\"]");
        assert!(e.contains("invalid branch pattern"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(259_200)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        for bad in [
            "",
            "m",
            "10",
            "1.5h",
            "-1d",
            "0m",
            "1y",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
