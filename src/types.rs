//! Newtypes shared by every part of stagebot. Past the parsing edge the code speaks in these,
//! never in raw strings or octocrab models.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value could not become one of our types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl InvalidValue {
    fn new(what: &'static str, value: &str, why: &'static str) -> Self {
        Self {
            what,
            value: value.chars().take(200).collect(),
            why,
        }
    }
}

/// `owner/name` of a GitHub repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName {
    owner: String,
    name: String,
}

impl RepoName {
    pub fn new(owner: &str, name: &str) -> Result<Self, InvalidValue> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && s != "."
                && s != ".."
        };
        if !valid(owner) {
            return Err(InvalidValue::new(
                "repository owner",
                owner,
                "expected [A-Za-z0-9._-]",
            ));
        }
        if !valid(name) {
            return Err(InvalidValue::new(
                "repository name",
                name,
                "expected [A-Za-z0-9._-]",
            ));
        }
        Ok(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
    pub fn owner(&self) -> &str {
        &self.owner
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl FromStr for RepoName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((owner, name)) => Self::new(owner, name),
            None => Err(InvalidValue::new("repository", s, "expected owner/name")),
        }
    }
}

impl TryFrom<String> for RepoName {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RepoName> for String {
    fn from(r: RepoName) -> String {
        r.to_string()
    }
}

/// A pull request (or issue) number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrNumber(pub u64);

impl fmt::Display for PrNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A git commit id: lowercase hex, 7 to 64 characters (SHA-1 or SHA-256, possibly abbreviated).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha(String);

impl Sha {
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        if !(7..=64).contains(&s.len()) {
            return Err(InvalidValue::new(
                "commit sha",
                s,
                "expected 7 to 64 hex digits",
            ));
        }
        if !s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(InvalidValue::new("commit sha", s, "expected hex digits"));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first seven digits, as people write them.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
    /// The all-zero sha GitHub sends as `before`/`after` for created/deleted refs.
    pub fn is_zero(&self) -> bool {
        self.0.chars().all(|c| c == '0')
    }
    /// Does `prefix` (at least 4 hex digits) name this commit?
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        prefix.len() >= 4 && self.0.starts_with(&prefix.to_ascii_lowercase())
    }
}

impl fmt::Display for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Sha {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Sha {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<Sha> for String {
    fn from(s: Sha) -> String {
        s.0
    }
}

/// An environment's DNS-label name: `[a-z0-9-]`, 1 to 63 characters, no leading or trailing `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() || s.len() > 63 {
            return Err(InvalidValue::new("slug", s, "expected 1 to 63 characters"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(InvalidValue::new("slug", s, "expected [a-z0-9-]"));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(InvalidValue::new(
                "slug",
                s,
                "must not start or end with '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn staging() -> Self {
        Self("staging".to_owned())
    }
    pub fn production() -> Self {
        Self("production".to_owned())
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Slug {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Slug {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<Slug> for String {
    fn from(s: Slug) -> String {
        s.0
    }
}

/// GitHub's `X-GitHub-Delivery` (a GUID); any printable ASCII up to 100 characters is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeliveryId(String);

impl DeliveryId {
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() || s.len() > 100 {
            return Err(InvalidValue::new(
                "delivery id",
                s,
                "expected 1 to 100 characters",
            ));
        }
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(InvalidValue::new(
                "delivery id",
                s,
                "expected printable ASCII",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DeliveryId {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<DeliveryId> for String {
    fn from(s: DeliveryId) -> String {
        s.0
    }
}

/// The three kinds of environment (docs/architecture.md, "The environment state machine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvKind {
    Preview,
    Staging,
    Production,
}

impl EnvKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvKind::Preview => "preview",
            EnvKind::Staging => "staging",
            EnvKind::Production => "production",
        }
    }
}

impl fmt::Display for EnvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name an environment goes by on GitHub and in `STAGEBOT_ENV`: `preview/<slug>` for
/// previews, `staging` and `production` for the shared ones.
pub fn environment_name(kind: EnvKind, slug: &Slug) -> String {
    match kind {
        EnvKind::Preview => format!("preview/{slug}"),
        EnvKind::Staging | EnvKind::Production => kind.to_string(),
    }
}

/// An environment's identity: (repository, slug).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnvId {
    pub repo: RepoName,
    pub slug: Slug,
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.repo, self.slug)
    }
}

/// GitHub's repository permission levels, ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    None,
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Read => "read",
            Permission::Triage => "triage",
            Permission::Write => "write",
            Permission::Maintain => "maintain",
            Permission::Admin => "admin",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "none" => Permission::None,
            "read" | "pull" => Permission::Read,
            "triage" => Permission::Triage,
            "write" | "push" => Permission::Write,
            "maintain" => Permission::Maintain,
            "admin" => Permission::Admin,
            _ => {
                return Err(InvalidValue::new(
                    "permission",
                    s,
                    "expected none, read, triage, write, maintain or admin",
                ));
            }
        })
    }
}

/// A secret string that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_name_round_trips() {
        let r: RepoName = "octo-org/web.app".parse().unwrap();
        assert_eq!(r.owner(), "octo-org");
        assert_eq!(r.to_string(), "octo-org/web.app");
        assert!("noslash".parse::<RepoName>().is_err());
        assert!("a/b/c".parse::<RepoName>().is_err());
        assert!("../x".parse::<RepoName>().is_err());
    }

    #[test]
    fn sha_is_validated_and_lowercased() {
        let s = Sha::new("ABCDEF1234567").unwrap();
        assert_eq!(s.as_str(), "abcdef1234567");
        assert_eq!(s.short(), "abcdef1");
        assert!(Sha::new("xyz1234").is_err());
        assert!(Sha::new("abc").is_err());
        assert!(Sha::new(&"0".repeat(40)).unwrap().is_zero());
    }

    #[test]
    fn slug_rules() {
        assert!(Slug::new("pr-42-new-page").is_ok());
        assert!(Slug::new("-x").is_err());
        assert!(Slug::new("Upper").is_err());
        assert!(Slug::new(&"a".repeat(64)).is_err());
    }

    #[test]
    fn permissions_order() {
        assert!(Permission::Admin > Permission::Maintain);
        assert!(Permission::Maintain > Permission::Write);
        assert_eq!("push".parse::<Permission>().unwrap(), Permission::Write);
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }
}
