//! The lenient reader of GitHub's webhook payloads: raw serde structs in GitHub's shape
//! (every field optional, any type tolerated) turned into the typed [`Event`]s of
//! [`crate::event`]. Nothing outside this file sees the raw structs.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::{Map, Value};

use super::*;
use crate::types::{InvalidValue, PrNumber, RepoName, Sha};

/// Parse a delivery body for the `X-GitHub-Event` name `event`.
///
/// Events and actions stagebot does not handle become [`Event::Ignored`] with a reason; only a
/// payload that claims to be a handled event but lacks what that event must carry is an error.
/// Any body that is not a JSON object is an error, whatever the event.
///
/// Reading is lenient: a field GitHub may omit, send as `null` or (in a future API version) send
/// with another type is treated as absent, and an optional value that fails validation (say a
/// malformed `merge_commit_sha`) becomes `None`. A *required* field that is absent or unreadable
/// is an [`EventError::Field`] naming its path (`pull_request.head.sha`); a required value that
/// fails validation is an [`EventError::Invalid`]. This function never panics.
pub fn parse_event(event: &str, payload: &[u8]) -> Result<Event, EventError> {
    parse_with::<OnePass>(event, payload)
}

/// How a payload's bytes become its raw struct: in one pass ([`read`]) or through a JSON tree
/// ([`read_through_tree`], the reference the one pass is tested against).
trait Reader {
    fn read<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error>;
}

struct OnePass;

impl Reader for OnePass {
    fn read<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
        read(payload)
    }
}

#[cfg(test)]
struct Tree;

#[cfg(test)]
impl Reader for Tree {
    fn read<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
        read_through_tree(payload)
    }
}

#[cfg(test)]
pub(super) fn parse_event_through_tree(event: &str, payload: &[u8]) -> Result<Event, EventError> {
    parse_with::<Tree>(event, payload)
}

fn parse_with<R: Reader>(event: &str, payload: &[u8]) -> Result<Event, EventError> {
    let cx = Cx { event };
    match event {
        "pull_request" => cx.pull_request(R::read(payload)?),
        "push" => cx.push(R::read(payload)?),
        "delete" => cx.delete(R::read(payload)?),
        "issue_comment" => cx.issue_comment(R::read(payload)?),
        "installation" => cx.installation(R::read(payload)?),
        "installation_repositories" => cx.installation_repositories(R::read(payload)?),
        "check_run" | "check_suite" | "status" => cx.ci(R::read(payload)?),
        "ping" => {
            let raw: RawPing = R::read(payload)?;
            Ok(Event::Ping {
                zen: raw.zen.0,
                hook_id: raw.hook_id.0.or(raw.hook.0.and_then(|h| h.id.0)),
            })
        }
        other => {
            // Not read, but it must still be a JSON object.
            let _: Ignored = R::read(payload)?;
            Ok(ignored(format!("event `{}` is not handled", clip(other))))
        }
    }
}

/// Read a payload object into its raw struct in one pass over the bytes (no JSON tree: a tree of
/// the 26 KB `pull_request` payload, and one per lenient field inside it, was most of the
/// worker's time; docs/performance.md, round 3).
///
/// One pass gives the same result as reading through a [`Value`] for every payload the front
/// door accepts (`payload_check::check_json_object`: every stored payload passed it) whose keys
/// are unique; an object with a key twice (the derive refuses it, a JSON object keeps the last)
/// is read through a `Value` instead (`event::tests::one_pass_reads_like_a_tree`). The one pass
/// skips the values it does not read without checking a number's range or the nesting depth
/// there, which the front door's check did.
fn read<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
    let is_object = payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    // serde_json skips the strings nobody reads without checking their UTF-8 or what a `\u`
    // escape stands for, which a tree refuses: UTF-8 is checked first, and a payload with an
    // escaped surrogate anywhere (rare: GitHub sends UTF-8) is read through the tree.
    if is_object
        && !may_hold_an_escaped_surrogate(payload)
        && let Ok(text) = std::str::from_utf8(payload)
        && let Ok(raw) = serde_json::from_str::<T>(text)
    {
        return Ok(raw);
    }
    read_through_tree(payload)
}

/// Any object, nothing kept.
#[derive(Deserialize)]
struct Ignored {}

/// Is there a `\uD800`–`\uDFFF` escape (or what looks like one) anywhere in `payload`?
fn may_hold_an_escaped_surrogate(payload: &[u8]) -> bool {
    payload.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8' | b'9' | b'a'..=b'f' | b'A'..=b'F')
    })
}

/// The same through a JSON tree (the reader before round 3; kept for the objects with a key
/// twice and as the reference the one-pass reader is tested against).
fn read_through_tree<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
    let object: Map<String, Value> = serde_json::from_slice(payload)?;
    serde_json::from_value(Value::Object(object))
}

fn ignored(reason: String) -> Event {
    Event::Ignored { reason }
}

/// At most 100 characters of something a sender controls, for messages.
fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

/// A field read leniently: absent, `null` and values of an unexpected shape are all `None`.
#[derive(Debug)]
struct Loose<T>(Option<T>);

impl<T> Default for Loose<T> {
    fn default() -> Self {
        Self(None)
    }
}

/// The shape a lenient field's type reads from; a value of another shape reads as absent.
enum Shape {
    /// A string, number or boolean.
    Scalar,
    /// An object (a raw struct: `#[serde(default)]`, every field [`Loose`], so any object reads).
    Object,
    /// An array (of [`Loose`] elements, so any array reads).
    Array,
    /// Anything.
    Any,
}

/// A type a [`Loose`] field may hold. Reading one from a value of its shape never fails (objects
/// and arrays hold only `Loose` parts; scalars are converted or absent), which is what lets
/// [`read`] go over the bytes once.
trait Lenient: DeserializeOwned {
    const SHAPE: Shape;
}

macro_rules! lenient {
    ($shape:ident: $($t:ty),+ $(,)?) => {
        $(impl Lenient for $t {
            const SHAPE: Shape = Shape::$shape;
        })+
    };
}

lenient!(Scalar: String, bool, u64);
lenient!(Any: Value);
lenient!(Object: RawRepoRef, RawAccount, RawBranch, RawChanges, RawCheck, RawComment, RawFrom, RawId, RawInstallation, RawIssue, RawLabel, RawPr, RawRepo, RawUser);

impl<T: Lenient> Lenient for Vec<Loose<T>> {
    const SHAPE: Shape = Shape::Array;
}

impl<'de, T: Lenient> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor(std::marker::PhantomData))
    }
}

struct LooseVisitor<T>(std::marker::PhantomData<T>);

impl<T> LooseVisitor<T> {
    /// A scalar converted to `T`, or absent when `T` is not read from it.
    fn scalar<'de, E, V>(v: V) -> Loose<T>
    where
        T: Lenient,
        E: serde::de::Error,
        V: serde::de::IntoDeserializer<'de, E>,
    {
        Loose(T::deserialize(v.into_deserializer()).ok())
    }
}

impl<'de, T: Lenient> serde::de::Visitor<'de> for LooseVisitor<T> {
    type Value = Loose<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Loose<T>, E> {
        Ok(Loose(None))
    }

    fn visit_none<E>(self) -> Result<Loose<T>, E> {
        Ok(Loose(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose<T>, D::Error> {
        Loose::deserialize(d)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Loose<T>, E> {
        Ok(Self::scalar::<E, _>(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Loose<T>, E> {
        Ok(Self::scalar::<E, _>(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Loose<T>, E> {
        Ok(Self::scalar::<E, _>(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Loose<T>, E> {
        Ok(Self::scalar::<E, _>(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Loose<T>, E> {
        Ok(Self::scalar::<E, _>(v))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Loose<T>, A::Error> {
        let map = serde::de::value::MapAccessDeserializer::new(map);
        if matches!(T::SHAPE, Shape::Object | Shape::Any) {
            T::deserialize(map).map(|t| Loose(Some(t)))
        } else {
            serde::de::IgnoredAny::deserialize(map)?;
            Ok(Loose(None))
        }
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Loose<T>, A::Error> {
        let seq = serde::de::value::SeqAccessDeserializer::new(seq);
        if matches!(T::SHAPE, Shape::Array | Shape::Any) {
            T::deserialize(seq).map(|t| Loose(Some(t)))
        } else {
            serde::de::IgnoredAny::deserialize(seq)?;
            Ok(Loose(None))
        }
    }
}

// The private payload shapes: only what stagebot reads, every field `Loose`.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUser {
    login: Loose<String>,
    #[serde(rename = "type")]
    kind: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRepo {
    full_name: Loose<String>,
    clone_url: Loose<String>,
    default_branch: Loose<String>,
    master_branch: Loose<String>,
    private: Loose<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawId {
    id: Loose<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawBranch {
    #[serde(rename = "ref")]
    git_ref: Loose<String>,
    sha: Loose<String>,
    repo: Loose<RawRepo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPr {
    number: Loose<u64>,
    title: Loose<String>,
    user: Loose<RawUser>,
    state: Loose<String>,
    draft: Loose<bool>,
    merged: Loose<bool>,
    merge_commit_sha: Loose<String>,
    head: Loose<RawBranch>,
    base: Loose<RawBranch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLabel {
    name: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPrPayload {
    action: Loose<String>,
    pull_request: Loose<RawPr>,
    before: Loose<String>,
    label: Loose<RawLabel>,
    repository: Loose<RawRepo>,
    installation: Loose<RawId>,
    sender: Loose<RawUser>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPushPayload {
    #[serde(rename = "ref")]
    git_ref: Loose<String>,
    before: Loose<String>,
    after: Loose<String>,
    created: Loose<bool>,
    deleted: Loose<bool>,
    forced: Loose<bool>,
    repository: Loose<RawRepo>,
    installation: Loose<RawId>,
    sender: Loose<RawUser>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDeletePayload {
    #[serde(rename = "ref")]
    git_ref: Loose<String>,
    ref_type: Loose<String>,
    repository: Loose<RawRepo>,
    installation: Loose<RawId>,
    sender: Loose<RawUser>,
}

/// `check_run`, `check_suite` (the object under the event's name) and `status` (top level).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCiPayload {
    check_run: Loose<RawCheck>,
    check_suite: Loose<RawCheck>,
    sha: Loose<String>,
    context: Loose<String>,
    repository: Loose<RawRepo>,
    installation: Loose<RawId>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCheck {
    head_sha: Loose<String>,
    name: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawIssue {
    number: Loose<u64>,
    pull_request: Loose<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawComment {
    id: Loose<u64>,
    body: Loose<String>,
    user: Loose<RawUser>,
    author_association: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawFrom {
    from: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawChanges {
    body: Loose<RawFrom>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCommentPayload {
    action: Loose<String>,
    issue: Loose<RawIssue>,
    comment: Loose<RawComment>,
    changes: Loose<RawChanges>,
    repository: Loose<RawRepo>,
    installation: Loose<RawId>,
    sender: Loose<RawUser>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAccount {
    login: Loose<String>,
    /// Enterprise accounts have a `slug` instead of a `login`.
    slug: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawInstallation {
    id: Loose<u64>,
    account: Loose<RawAccount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRepoRef {
    full_name: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawInstallationPayload {
    action: Loose<String>,
    installation: Loose<RawInstallation>,
    repositories: Loose<Vec<Loose<RawRepoRef>>>,
    repositories_added: Loose<Vec<Loose<RawRepoRef>>>,
    repositories_removed: Loose<Vec<Loose<RawRepoRef>>>,
    sender: Loose<RawUser>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPing {
    zen: Loose<String>,
    hook_id: Loose<u64>,
    hook: Loose<RawId>,
}

/// The event being parsed, for error messages.
struct Cx<'a> {
    event: &'a str,
}

impl Cx<'_> {
    fn missing(&self, field: &str) -> EventError {
        EventError::Field {
            event: clip(self.event),
            field: field.to_owned(),
        }
    }

    fn invalid(&self, source: InvalidValue) -> EventError {
        EventError::Invalid {
            event: clip(self.event),
            source,
        }
    }

    fn req<T>(&self, value: Option<T>, field: &str) -> Result<T, EventError> {
        value.ok_or_else(|| self.missing(field))
    }

    fn sha(&self, value: Option<String>, field: &str) -> Result<Sha, EventError> {
        Sha::new(&self.req(value, field)?).map_err(|e| self.invalid(e))
    }

    fn repo_name(&self, full_name: Option<String>, field: &str) -> Result<RepoName, EventError> {
        self.req(full_name, field)?
            .parse()
            .map_err(|e| self.invalid(e))
    }

    fn actor(&self, user: Option<RawUser>, field: &str) -> Result<Actor, EventError> {
        let user = self.req(user, field)?;
        let login = self.req(user.login.0, &format!("{field}.login"))?;
        Ok(actor(login, user.kind.0.as_deref()))
    }

    fn repo_info(&self, repo: Option<RawRepo>) -> Result<RepoInfo, EventError> {
        let repo = self.req(repo, "repository")?;
        Ok(RepoInfo {
            name: self.repo_name(repo.full_name.0, "repository.full_name")?,
            default_branch: repo
                .default_branch
                .0
                .or(repo.master_branch.0)
                .unwrap_or_else(|| "main".to_owned()),
            clone_url: self.req(repo.clone_url.0, "repository.clone_url")?,
            private: repo.private.0.unwrap_or(false),
        })
    }

    fn repo_list(
        &self,
        list: Option<Vec<Loose<RawRepoRef>>>,
        field: &str,
    ) -> Result<Vec<RepoName>, EventError> {
        // A list with an element that is not an object reads as absent, as a whole.
        let list: Option<Vec<RawRepoRef>> = list.and_then(|l| l.into_iter().map(|r| r.0).collect());
        list.unwrap_or_default()
            .into_iter()
            .map(|r| self.repo_name(r.full_name.0, &format!("{field}[].full_name")))
            .collect()
    }

    fn pull_request(&self, raw: RawPrPayload) -> Result<Event, EventError> {
        let action = self.req(raw.action.0, "action")?;
        let action = match action.as_str() {
            "opened" => PrAction::Opened,
            "reopened" => PrAction::Reopened,
            // `before` is optional: an unreadable one is dropped, not an error.
            "synchronize" => PrAction::Synchronize {
                before: raw.before.0.and_then(|s| Sha::new(&s).ok()),
            },
            "ready_for_review" => PrAction::ReadyForReview,
            "converted_to_draft" => PrAction::ConvertedToDraft,
            "closed" => PrAction::Closed {
                merged: raw
                    .pull_request
                    .0
                    .as_ref()
                    .and_then(|pr| pr.merged.0)
                    .unwrap_or(false),
            },
            "labeled" | "unlabeled" => {
                let label = self.req(raw.label.0.and_then(|l| l.name.0), "label.name")?;
                if action == "labeled" {
                    PrAction::Labeled { label }
                } else {
                    PrAction::Unlabeled { label }
                }
            }
            other => {
                return Ok(ignored(format!(
                    "pull_request action `{}` is not handled",
                    clip(other)
                )));
            }
        };
        let repo = self.repo_info(raw.repository.0)?;
        let pr = self.req(raw.pull_request.0, "pull_request")?;
        let number = PrNumber(self.req(pr.number.0, "pull_request.number")?);
        let head = self.req(pr.head.0, "pull_request.head")?;
        let base = self.req(pr.base.0, "pull_request.base")?;
        let base_repo = base.repo.0.unwrap_or_default();
        let base_full_name = base_repo
            .full_name
            .0
            .unwrap_or_else(|| repo.name.to_string());
        let head_repo = head.repo.0;
        let fork = match head_repo.as_ref().and_then(|r| r.full_name.0.as_deref()) {
            Some(head_full_name) => !head_full_name.eq_ignore_ascii_case(&base_full_name),
            // The head repository was deleted (or is unreadable): treat as foreign.
            None => true,
        };
        let head_clone_url = head_repo
            .and_then(|r| r.clone_url.0)
            .or(base_repo.clone_url.0)
            .unwrap_or_else(|| repo.clone_url.clone());
        let author = match pr.user.0 {
            Some(user) => self.actor(Some(user), "pull_request.user")?,
            // GitHub shows deleted accounts as `ghost`.
            None => actor("ghost".to_owned(), None),
        };
        let open = match pr.state.0.as_deref() {
            Some(state) => state == "open",
            None => !matches!(action, PrAction::Closed { .. }),
        };
        let pr = PullRequest {
            number,
            title: pr.title.0.unwrap_or_default(),
            author,
            head_ref: self.req(head.git_ref.0, "pull_request.head.ref")?,
            head_sha: self.sha(head.sha.0, "pull_request.head.sha")?,
            head_clone_url,
            base_ref: self.req(base.git_ref.0, "pull_request.base.ref")?,
            draft: pr.draft.0.unwrap_or(false),
            fork,
            merged: pr.merged.0.unwrap_or(false),
            merge_commit_sha: pr.merge_commit_sha.0.and_then(|s| Sha::new(&s).ok()),
            open,
        };
        Ok(Event::PullRequest(PullRequestEvent {
            action,
            repo,
            installation_id: raw.installation.0.and_then(|i| i.id.0),
            sender: self.actor(raw.sender.0, "sender")?,
            pr,
        }))
    }

    fn push(&self, raw: RawPushPayload) -> Result<Event, EventError> {
        let git_ref = self.req(raw.git_ref.0, "ref")?;
        let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
            let what = if git_ref.starts_with("refs/tags/") {
                "a tag"
            } else {
                "a ref that is not a branch"
            };
            return Ok(ignored(format!("push to {what} (`{}`)", clip(&git_ref))));
        };
        if branch.is_empty() {
            return Err(self.missing("ref"));
        }
        let repo = self.repo_info(raw.repository.0)?;
        Ok(Event::Push(PushEvent {
            is_default_branch: branch == repo.default_branch,
            branch: branch.to_owned(),
            before: self.sha(raw.before.0, "before")?,
            after: self.sha(raw.after.0, "after")?,
            created: raw.created.0.unwrap_or(false),
            deleted: raw.deleted.0.unwrap_or(false),
            forced: raw.forced.0.unwrap_or(false),
            repo,
            installation_id: raw.installation.0.and_then(|i| i.id.0),
            sender: self.actor(raw.sender.0, "sender")?,
        }))
    }

    fn delete(&self, raw: RawDeletePayload) -> Result<Event, EventError> {
        let ref_type = self.req(raw.ref_type.0, "ref_type")?;
        if ref_type != "branch" {
            return Ok(ignored(format!(
                "delete of a {} is not handled",
                clip(&ref_type)
            )));
        }
        let git_ref = self.req(raw.git_ref.0, "ref")?;
        // GitHub sends the bare name; accept a full ref too.
        let branch = git_ref.strip_prefix("refs/heads/").unwrap_or(&git_ref);
        if branch.is_empty() {
            return Err(self.missing("ref"));
        }
        Ok(Event::BranchDeleted(BranchDeletedEvent {
            branch: branch.to_owned(),
            repo: self.repo_info(raw.repository.0)?,
            installation_id: raw.installation.0.and_then(|i| i.id.0),
            sender: self.actor(raw.sender.0, "sender")?,
        }))
    }

    /// CI events are only hints to look again: one stagebot cannot use (no commit, no
    /// repository, its own `stagebot/*` status) is ignored, never a failed delivery.
    fn ci(&self, raw: RawCiPayload) -> Result<Event, EventError> {
        let unusable = || {
            Ok(ignored(format!(
                "`{}` without a usable commit or repository: nothing to look at again",
                self.event
            )))
        };
        let (sha, name) = match self.event {
            "check_run" | "check_suite" => {
                let check = if self.event == "check_run" {
                    raw.check_run.0
                } else {
                    raw.check_suite.0
                };
                let Some(c) = check else { return unusable() };
                let name = c.name.0.unwrap_or_else(|| "check suite".to_owned());
                (c.head_sha.0, name)
            }
            _ => {
                let context = raw.context.0.unwrap_or_default();
                if context.starts_with("stagebot/") {
                    return Ok(ignored(
                        "stagebot's own commit status never counts for a CI gate".into(),
                    ));
                }
                (raw.sha.0, context)
            }
        };
        let Some(sha) = sha.and_then(|s| Sha::new(&s).ok()) else {
            return unusable();
        };
        let Ok(repo) = self.repo_info(raw.repository.0) else {
            return unusable();
        };
        Ok(Event::CiChanged(CiEvent {
            repo,
            installation_id: raw.installation.0.and_then(|i| i.id.0),
            sha,
            name: clip(&name),
        }))
    }

    fn issue_comment(&self, raw: RawCommentPayload) -> Result<Event, EventError> {
        let action = match self.req(raw.action.0, "action")?.as_str() {
            "created" => CommentAction::Created,
            "edited" => CommentAction::Edited {
                previous_body: raw.changes.0.and_then(|c| c.body.0).and_then(|b| b.from.0),
            },
            other => {
                return Ok(ignored(format!(
                    "issue_comment action `{}` is not handled",
                    clip(other)
                )));
            }
        };
        let issue = self.req(raw.issue.0, "issue")?;
        let comment = self.req(raw.comment.0, "comment")?;
        let author = self.actor(comment.user.0, "comment.user")?;
        // An edit is judged by its editor, so an edit must say who made it; a new comment's
        // sender is its author.
        let sender = match (&action, raw.sender.0) {
            (CommentAction::Created, None) => author.clone(),
            (_, sender) => self.actor(sender, "sender")?,
        };
        Ok(Event::Comment(CommentEvent {
            action,
            repo: self.repo_info(raw.repository.0)?,
            installation_id: raw.installation.0.and_then(|i| i.id.0),
            number: PrNumber(self.req(issue.number.0, "issue.number")?),
            is_pr: issue.pull_request.0.is_some(),
            comment_id: self.req(comment.id.0, "comment.id")?,
            body: comment.body.0.unwrap_or_default(),
            author,
            author_association: comment
                .author_association
                .0
                .unwrap_or_else(|| "NONE".to_owned()),
            sender,
        }))
    }

    /// `installation.id` and the account's login (or an enterprise's slug).
    fn installation_ref(&self, raw: Option<RawInstallation>) -> Result<(u64, String), EventError> {
        let installation = self.req(raw, "installation")?;
        let id = self.req(installation.id.0, "installation.id")?;
        let account = installation.account.0.and_then(|a| a.login.0.or(a.slug.0));
        Ok((id, self.req(account, "installation.account.login")?))
    }

    fn installation(&self, raw: RawInstallationPayload) -> Result<Event, EventError> {
        let action = match self.req(raw.action.0, "action")?.as_str() {
            "created" => InstallationAction::Created,
            "deleted" => InstallationAction::Deleted,
            "suspend" => InstallationAction::Suspend,
            "unsuspend" => InstallationAction::Unsuspend,
            "new_permissions_accepted" => InstallationAction::NewPermissionsAccepted,
            other => {
                return Ok(ignored(format!(
                    "installation action `{}` is not handled",
                    clip(other)
                )));
            }
        };
        let (installation_id, account) = self.installation_ref(raw.installation.0)?;
        Ok(Event::Installation(InstallationEvent {
            action,
            installation_id,
            account,
            repos: self.repo_list(raw.repositories.0, "repositories")?,
            sender: self.actor(raw.sender.0, "sender")?,
        }))
    }

    fn installation_repositories(&self, raw: RawInstallationPayload) -> Result<Event, EventError> {
        let action = self.req(raw.action.0, "action")?;
        if action != "added" && action != "removed" {
            return Ok(ignored(format!(
                "installation_repositories action `{}` is not handled",
                clip(&action)
            )));
        }
        let (installation_id, account) = self.installation_ref(raw.installation.0)?;
        Ok(Event::InstallationRepositories(InstallationReposEvent {
            installation_id,
            account,
            added: self.repo_list(raw.repositories_added.0, "repositories_added")?,
            removed: self.repo_list(raw.repositories_removed.0, "repositories_removed")?,
            sender: self.actor(raw.sender.0, "sender")?,
        }))
    }
}

fn actor(login: String, kind: Option<&str>) -> Actor {
    Actor {
        is_bot: kind == Some("Bot") || login.ends_with("[bot]"),
        login,
    }
}
