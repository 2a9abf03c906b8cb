//! Every product rule, and nothing else (docs/architecture.md, "The parts and the flow"): a pure function from an event, the
//! repository's config and the current state to the actions to take. No I/O, no clock reads:
//! the caller gathers the state (including the commenter's permission and the PR's head) first.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::command::{self, Command, EnvTarget, PromoteTarget, RollbackTo};
use crate::environment::{EnvRecord, EnvState, Op, Release, Trigger};
use crate::event::{
    BranchDeletedEvent, CiEvent, CommentAction, CommentEvent, Event, PrAction, PullRequestEvent,
    PushEvent,
};
use crate::github::{PrInfo, Reaction};
use crate::messages::{self, CiText, Refusal};
use crate::repo_config::{CiGate, OnMerge, RepoConfig};
use crate::slug::preview_slug;
use crate::store::{CommandOutcome as Ran, CommandRun, PrRecord};
use crate::types::{EnvKind, Permission, PrNumber, Sha, Slug};

/// Operator limits that shape decisions.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Live previews per installation; `None` = unlimited.
    pub max_previews: Option<usize>,
    /// `/extend` never pushes an expiry further than this from now.
    pub max_extend: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_previews: None,
            max_extend: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

/// What the caller knows when a decision is made.
#[derive(Debug, Clone)]
pub struct State {
    pub now: DateTime<Utc>,
    /// The repository's environments (any state).
    pub envs: Vec<EnvRecord>,
    /// Releases of the environments a command may name, by slug.
    pub releases: Vec<(Slug, Vec<Release>)>,
    /// Stored facts about the PR the event concerns.
    pub pr_record: Option<PrRecord>,
    /// The PR as GitHub reports it now (comment events only).
    pub pr_info: Option<PrInfo>,
    /// The commenter's permission (comment events only).
    pub permission: Option<Permission>,
    /// Profiles defined by the config at the PR's head commit (what a `/stage <profile>` will
    /// build); `None` means: check the trusted config's profiles.
    pub head_profiles: Option<Vec<String>>,
    /// Previews occupying a slot in the installation (for the capacity limit).
    pub previews_in_use: usize,
    pub limits: Limits,
    /// Arrival sequence of the delivery being decided (`None` outside the worker): what came
    /// "before" a comment is what stagebot received before it.
    pub received: Option<u64>,
    /// Head branches of this repository's open pull requests (not forks'); gathered for pushes
    /// that could deploy a branch environment.
    pub open_pr_branches: Vec<String>,
}

impl State {
    fn env(&self, slug: &Slug) -> Option<&EnvRecord> {
        self.envs.iter().find(|e| &e.id.slug == slug)
    }
    fn active_env(&self, slug: &Slug) -> Option<&EnvRecord> {
        self.env(slug).filter(|e| e.is_active())
    }
    fn releases_of(&self, slug: &Slug) -> &[Release] {
        self.releases
            .iter()
            .find(|(s, _)| s == slug)
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[])
    }
}

/// Where a deploy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: EnvKind,
    pub slug: Slug,
    pub branch: String,
    pub pr: Option<PrNumber>,
    /// Where to fetch the code from (a fork's clone URL for fork PRs).
    pub clone_url: Option<String>,
    /// The code comes from a fork (its branch names are not this repository's).
    pub fork: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    pub target: Target,
    pub sha: Sha,
    pub trigger: Trigger,
    pub by: String,
    pub ack: Option<u64>,
    pub force: bool,
    pub profile: Option<String>,
    /// Wait in the capacity queue instead of starting now.
    pub queue: bool,
    /// Inactivity TTL for previews.
    pub ttl: Option<Duration>,
    /// The CI gate the commit must pass first (`require_checks` of the target's kind).
    pub gate: Option<CiGate>,
    /// What allowed the deploy without its gate (an admin's `--skip-checks`), recorded on the
    /// release.
    pub checks: Option<String>,
}

/// Why the PR's sticky comment carries a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Draft,
    Fork,
    ForkNeedsApproval {
        sha: Sha,
    },
    OnDemand,
    Closed,
    /// A signed-in user acted on the dashboard (docs/dashboard.md, "Actions").
    Dashboard {
        actor: String,
        action: DashboardAction,
        slug: Slug,
        /// The release (number, commit) the action deploys, if it deploys one.
        release: Option<(u32, Sha)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deploy(Deploy),
    Teardown {
        slug: Slug,
        reason: String,
        by: String,
        ack: Option<u64>,
    },
    /// Push a preview's expiry out (acknowledged at once: the policy adds the reaction).
    Extend {
        slug: Slug,
        until: DateTime<Utc>,
    },
    /// Somebody visited a preview at `at` (the proxy forwarded a request): record the visit as
    /// activity and move its expiry to `until` (never earlier).
    Visited {
        slug: Slug,
        at: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    },
    /// Warn that a preview will be swept at `at`.
    WarnExpiry {
        slug: Slug,
        at: DateTime<Utc>,
    },
    React {
        comment_id: u64,
        reaction: Reaction,
    },
    /// Command `index` of a comment has run (its actions come before this): record it with
    /// its part of the reply, so a retried delivery neither runs nor answers it again.
    CommandRan {
        comment: CommentRef,
        index: usize,
        run: CommandRun,
    },
    /// Post the combined reply to a comment, once (a retry looks for it on GitHub first).
    CommentReply {
        comment: CommentRef,
        body: String,
    },
    /// Re-render the PR's sticky comment, with an optional notice.
    Sticky {
        pr: PrNumber,
        notice: Option<Notice>,
    },
    /// A maintainer approved this fork commit for deployment.
    ApproveFork {
        pr: PrNumber,
        sha: Sha,
    },
    /// Remember the commands a comment carried (edits with the same commands do nothing).
    CommentHandled {
        comment: CommentRef,
    },
    MarkPrClosed {
        pr: PrNumber,
        closed: bool,
    },
    /// Remember the commit a PR was merged as (its sticky comment lists the production release
    /// of that commit).
    RecordMerge {
        pr: PrNumber,
        sha: Sha,
    },
    /// Evaluate the CI gate of the environment's waiting deploy again.
    RecheckCi {
        slug: Slug,
    },
    /// Record that the environment saw these commits (late deliveries naming them are stale).
    Remember {
        slug: Slug,
        shas: Vec<Sha>,
    },
}

/// One version of a command comment (see [`crate::store::CommentVersion`]).
pub type CommentRef = crate::store::CommentVersion;

/// At most this many commands of one comment are run; the rest are answered with a note.
pub const MAX_COMMANDS_PER_COMMENT: usize = 10;

/// GitHub refuses comments longer than this many characters.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;

/// The decision for one event: actions, or a reason to ignore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Act(Vec<Action>),
    Ignore(String),
}

impl Decision {
    fn act(actions: Vec<Action>) -> Self {
        Decision::Act(actions)
    }
}

/// The decision for `event`.
const LABELS_IGNORED: &str = "labels do not change environments";

/// The events [`decide`] ignores whatever the configuration and the state: the engine answers
/// them before it reads the store or asks GitHub anything (a label storm costs no API calls).
pub fn ignored_whatever_the_state(event: &Event) -> Option<&'static str> {
    match event {
        Event::PullRequest(e)
            if matches!(
                e.action,
                PrAction::Labeled { .. } | PrAction::Unlabeled { .. }
            ) =>
        {
            Some(LABELS_IGNORED)
        }
        _ => None,
    }
}

/// The environments a decision about `event` may look at even when they are destroyed (by
/// slug: a late delivery naming a commit they saw, a destroyed preview a push does not bring
/// back). Every other destroyed environment changes no decision, so the engine gives
/// [`decide`] the live environments and, of the archived ones, only these (read by key: the
/// per-delivery cost does not grow with the destroyed environments; the table test in
/// `policy_tests.rs` checks the decisions are the same). See also [`pr_named`].
pub fn slugs_named(event: &Event) -> Vec<Slug> {
    match event {
        Event::PullRequest(e) => vec![preview_target(&e.pr).slug],
        Event::Push(e) => vec![
            Slug::production(),
            Slug::staging(),
            preview_slug(None, &e.branch),
        ],
        _ => Vec::new(),
    }
}

/// The pull request whose destroyed environments a decision about `event` may show, with the
/// shared ones (staging, production): a comment's (`/status` lists their release history).
pub fn pr_named(event: &Event) -> Option<PrNumber> {
    match event {
        Event::Comment(e) if e.is_pr => Some(e.number),
        _ => None,
    }
}

pub fn decide(event: &Event, config: &RepoConfig, state: &State) -> Decision {
    match decide_inner(event, config, state) {
        Decision::Act(actions) => Decision::Act(
            actions
                .into_iter()
                .map(|a| match a {
                    Action::Deploy(d) => Action::Deploy(with_gate(d, config)),
                    other => other,
                })
                .collect(),
        ),
        ignore => ignore,
    }
}

/// `d` with the CI gate its target's kind requires (`require_checks`): none for a rollback
/// (back to a release that ran before) or when the gate was skipped (`checks` says how).
pub fn with_gate(mut d: Deploy, config: &RepoConfig) -> Deploy {
    let rollback = d.trigger.is_rollback();
    if d.checks.is_none() && !rollback {
        d.gate = config.require_checks(d.target.kind).cloned();
    }
    d
}

fn decide_inner(event: &Event, config: &RepoConfig, state: &State) -> Decision {
    match event {
        Event::PullRequest(e) => pull_request(e, config, state),
        Event::Push(e) => push(e, config, state),
        Event::BranchDeleted(e) => branch_deleted(e, state),
        Event::Comment(e) => comment(e, config, state),
        Event::Ping { .. } => Decision::Ignore("ping".into()),
        Event::CiChanged(e) => ci_changed(e, state),
        Event::Installation(_) | Event::InstallationRepositories(_) => {
            Decision::Ignore("installation changes are recorded, not acted on".into())
        }
        Event::Ignored { reason } => Decision::Ignore(reason.clone()),
    }
}

fn ttl_of(config: &RepoConfig) -> Duration {
    config.preview.ttl
}

fn preview_target(pr: &crate::event::PullRequest) -> Target {
    Target {
        kind: EnvKind::Preview,
        slug: preview_slug(Some(pr.number), &pr.head_ref),
        branch: pr.head_ref.clone(),
        pr: Some(pr.number),
        clone_url: Some(pr.head_clone_url.clone()),
        fork: pr.fork,
    }
}

/// Would a new preview have to wait for a slot?
fn must_queue(state: &State, slug: &Slug) -> bool {
    let already = state
        .active_env(slug)
        .is_some_and(|e| e.state().occupies_slot());
    match state.limits.max_previews {
        Some(max) if !already => state.previews_in_use >= max,
        _ => false,
    }
}

/// An environment new commits redeploy: not destroyed and not on its way out.
fn follows_commits(env: &EnvRecord) -> bool {
    env.is_active() && env.state() != EnvState::TearingDown
}

fn deploy_preview(
    target: Target,
    sha: Sha,
    trigger: Trigger,
    by: &str,
    config: &RepoConfig,
    state: &State,
) -> Action {
    let queue = must_queue(state, &target.slug);
    Action::Deploy(Deploy {
        target,
        sha,
        trigger,
        by: by.to_owned(),
        ack: None,
        force: false,
        profile: None,
        gate: None,
        checks: None,
        queue,
        ttl: Some(ttl_of(config)),
    })
}

fn pull_request(e: &PullRequestEvent, config: &RepoConfig, state: &State) -> Decision {
    let pr = &e.pr;
    let target = preview_target(pr);
    let sticky = |notice| Action::Sticky {
        pr: pr.number,
        notice,
    };
    match &e.action {
        PrAction::Opened | PrAction::Reopened | PrAction::ReadyForReview => {
            let mut actions = Vec::new();
            if e.action == PrAction::Reopened {
                actions.push(Action::MarkPrClosed {
                    pr: pr.number,
                    closed: false,
                });
            }
            if pr.draft {
                actions.push(sticky(Some(Notice::Draft)));
            } else if pr.fork {
                actions.push(sticky(Some(Notice::Fork)));
            } else if !config.preview.auto {
                actions.push(sticky(Some(Notice::OnDemand)));
            } else {
                actions.push(deploy_preview(
                    target,
                    pr.head_sha.clone(),
                    Trigger::PullRequest,
                    &e.sender.login,
                    config,
                    state,
                ));
            }
            Decision::act(actions)
        }
        PrAction::Synchronize { before } => {
            if state.pr_record.as_ref().is_some_and(|r| r.closed) {
                return Decision::Ignore(
                    "the pull request is closed: a late push never brings its preview back".into(),
                );
            }
            let existing = state.env(&target.slug);
            if existing.is_some_and(|env| env.seen_shas.contains(&pr.head_sha)) {
                return Decision::Ignore(format!(
                    "commit {} was already seen for {}: a late delivery never moves an environment back",
                    pr.head_sha.short(),
                    target.slug
                ));
            }
            let mut actions = Vec::new();
            if let Some(before) = before.as_ref().filter(|_| existing.is_some()) {
                actions.push(Action::Remember {
                    slug: target.slug.clone(),
                    shas: vec![before.clone()],
                });
            }
            let active = existing.is_some_and(follows_commits);
            let destroyed = existing.is_some() && !active;
            if pr.fork {
                let approved = state
                    .pr_record
                    .as_ref()
                    .and_then(|r| r.approved_sha.as_ref());
                if approved == Some(&pr.head_sha) {
                    actions.push(deploy_preview(
                        target,
                        pr.head_sha.clone(),
                        Trigger::Push,
                        &e.sender.login,
                        config,
                        state,
                    ));
                } else if active || approved.is_some() {
                    actions.push(sticky(Some(Notice::ForkNeedsApproval {
                        sha: pr.head_sha.clone(),
                    })));
                } else if actions.is_empty() {
                    return Decision::Ignore(
                        "fork pull request without a preview: waiting for a maintainer's `/stage`"
                            .into(),
                    );
                }
                return Decision::act(actions);
            }
            if active || (!destroyed && !pr.draft && config.preview.auto) {
                actions.push(deploy_preview(
                    target,
                    pr.head_sha.clone(),
                    Trigger::Push,
                    &e.sender.login,
                    config,
                    state,
                ));
                Decision::act(actions)
            } else if actions.is_empty() {
                Decision::Ignore("no preview for this pull request".into())
            } else {
                Decision::act(actions)
            }
        }
        PrAction::Closed { merged } => {
            let mut actions = vec![Action::MarkPrClosed {
                pr: pr.number,
                closed: true,
            }];
            if let (true, Some(sha)) = (*merged, &pr.merge_commit_sha) {
                actions.push(Action::RecordMerge {
                    pr: pr.number,
                    sha: sha.clone(),
                });
            }
            if state.active_env(&target.slug).is_some() {
                actions.push(Action::Teardown {
                    slug: target.slug,
                    reason: if *merged {
                        "the pull request was merged".into()
                    } else {
                        "the pull request was closed".into()
                    },
                    by: e.sender.login.clone(),
                    ack: None,
                });
            } else {
                actions.push(sticky(Some(Notice::Closed)));
            }
            Decision::act(actions)
        }
        PrAction::ConvertedToDraft => {
            Decision::Ignore("a draft keeps its preview until closed".into())
        }
        PrAction::Labeled { .. } | PrAction::Unlabeled { .. } => {
            Decision::Ignore(LABELS_IGNORED.into())
        }
    }
}

fn teardown_branch(branch: &str, by: &str, reason: &str, state: &State) -> Vec<Action> {
    state
        .envs
        .iter()
        // A fork's branch of the same name is another branch: deleting ours leaves it alone.
        .filter(|e| e.kind == EnvKind::Preview && e.is_active() && !e.fork && e.branch == branch)
        .map(|e| Action::Teardown {
            slug: e.id.slug.clone(),
            reason: reason.to_owned(),
            by: by.to_owned(),
            ack: None,
        })
        .collect()
}

fn push(e: &PushEvent, config: &RepoConfig, state: &State) -> Decision {
    if e.deleted {
        let actions = teardown_branch(&e.branch, &e.sender.login, "the branch was deleted", state);
        return if actions.is_empty() {
            Decision::Ignore(format!(
                "branch {} deleted; it had no environment",
                e.branch
            ))
        } else {
            Decision::act(actions)
        };
    }
    if e.is_default_branch {
        let (kind, slug) = match config.on_merge() {
            OnMerge::None => {
                return Decision::Ignore(
                    "on_merge is `none`: a push to the default branch deploys nothing".into(),
                );
            }
            OnMerge::Production => (EnvKind::Production, Slug::production()),
            OnMerge::Staging => (EnvKind::Staging, Slug::staging()),
        };
        if state
            .env(&slug)
            .is_some_and(|env| env.seen_shas.contains(&e.after))
        {
            return Decision::Ignore(format!(
                "commit {} was already seen for {slug}",
                e.after.short()
            ));
        }
        let mut actions = vec![];
        if !e.before.is_zero() && state.env(&slug).is_some() {
            actions.push(Action::Remember {
                slug: slug.clone(),
                shas: vec![e.before.clone()],
            });
        }
        actions.push(Action::Deploy(Deploy {
            target: Target {
                kind,
                slug,
                branch: e.branch.clone(),
                pr: None,
                clone_url: None,
                fork: false,
            },
            sha: e.after.clone(),
            trigger: Trigger::Merge,
            by: e.sender.login.clone(),
            ack: None,
            force: false,
            profile: None,
            gate: None,
            checks: None,
            queue: false,
            ttl: None,
        }));
        return Decision::act(actions);
    }
    branch_push(e, config, state)
}

/// A push to another branch: its branch environment `br-<branch>` deploys when the branch
/// matches `branches` (a swept one comes back) or already has an environment following it (made
/// by `stagebot env deploy --branch`). A branch with an open pull request of this repository
/// gets only that pull request's preview; PR previews follow `synchronize`, not `push`.
fn branch_push(e: &PushEvent, config: &RepoConfig, state: &State) -> Decision {
    let slug = preview_slug(None, &e.branch);
    let existing = state
        .env(&slug)
        .filter(|env| env.kind == EnvKind::Preview && env.pr.is_none() && !env.fork);
    let follows = existing.is_some_and(follows_commits);
    if !follows && !config.branch_matches(&e.branch) {
        return Decision::Ignore(format!("no environment follows branch {}", e.branch));
    }
    if state.open_pr_branches.contains(&e.branch) {
        return Decision::Ignore(format!(
            "branch {} has an open pull request: it gets only the pull request's preview",
            e.branch
        ));
    }
    if existing.is_some_and(|env| env.seen_shas.contains(&e.after)) {
        return Decision::Ignore(format!(
            "commit {} was already seen for {slug}: a late delivery never moves an environment back",
            e.after.short()
        ));
    }
    let mut actions = Vec::new();
    if !e.before.is_zero() && existing.is_some() {
        actions.push(Action::Remember {
            slug: slug.clone(),
            shas: vec![e.before.clone()],
        });
    }
    actions.push(Action::Deploy(branch_deploy(
        &e.branch,
        e.after.clone(),
        Trigger::Push,
        &e.sender.login,
        existing.and_then(|env| env.profile.clone()),
        config,
        state,
    )));
    Decision::act(actions)
}

/// The deploy of branch `branch`'s environment (`br-<branch>`), a preview without a PR.
pub fn branch_deploy(
    branch: &str,
    sha: Sha,
    trigger: Trigger,
    by: &str,
    profile: Option<String>,
    config: &RepoConfig,
    state: &State,
) -> Deploy {
    let slug = preview_slug(None, branch);
    Deploy {
        queue: must_queue(state, &slug),
        target: Target {
            kind: EnvKind::Preview,
            slug,
            branch: branch.to_owned(),
            pr: None,
            clone_url: None,
            fork: false,
        },
        sha,
        trigger,
        by: by.to_owned(),
        ack: None,
        force: false,
        profile,
        gate: None,
        checks: None,
        ttl: Some(ttl_of(config)),
    }
}

/// A check or status of a commit changed: only environments whose deploy of that commit waits
/// for CI look again (a storm of check events about other commits costs nothing).
fn ci_changed(e: &CiEvent, state: &State) -> Decision {
    let actions: Vec<Action> = state
        .envs
        .iter()
        .filter(|env| {
            env.ci_wait().is_some()
                && matches!(&env.op(), Some(Op::Deploy { sha, .. }) if *sha == e.sha)
        })
        .map(|env| Action::RecheckCi {
            slug: env.id.slug.clone(),
        })
        .collect();
    if actions.is_empty() {
        Decision::Ignore(format!(
            "no deploy waits for CI on commit {}",
            e.sha.short()
        ))
    } else {
        Decision::act(actions)
    }
}

fn branch_deleted(e: &BranchDeletedEvent, state: &State) -> Decision {
    let actions = teardown_branch(&e.branch, &e.sender.login, "the branch was deleted", state);
    if actions.is_empty() {
        Decision::Ignore(format!("branch {} had no environment", e.branch))
    } else {
        Decision::act(actions)
    }
}

/// The permission a command needs.
pub fn required_permission(cmd: &Command, config: &RepoConfig) -> Permission {
    match cmd {
        Command::Help | Command::Status => Permission::None,
        // Skipping the CI gate is for admins only.
        Command::Promote {
            skip_checks: true, ..
        } => Permission::Admin,
        Command::Promote {
            target: PromoteTarget::Production,
            ..
        }
        | Command::Rollback {
            target: EnvTarget::Production,
            ..
        } => config.production.permission,
        _ => Permission::Write,
    }
}

/// The command text of a comment, normalized, to tell whether an edit changed it.
pub fn command_signature(body: &str) -> String {
    command::parse_commands(body)
        .into_iter()
        .map(|c| match c {
            Ok(c) => format!("{c:?}"),
            Err(e) => format!("error:{}", e.line),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn comment(e: &CommentEvent, config: &RepoConfig, state: &State) -> Decision {
    // The sender is who acts: the author of a new comment, the editor of an edited one.
    if e.sender.is_bot {
        return Decision::Ignore(format!("comment by bot {}", e.sender.login));
    }
    if e.author.is_bot && e.action == CommentAction::Created {
        return Decision::Ignore(format!("comment by bot {}", e.author.login));
    }
    if !e.is_pr {
        return Decision::Ignore("comment on an issue, not a pull request".into());
    }
    let commands = command::parse_commands(&e.body);
    if commands.is_empty() {
        return Decision::Ignore("no command in the comment".into());
    }
    let signature = command_signature(&e.body);
    let record = state.pr_record.as_ref();
    let handled = record.and_then(|r| r.handled_comments.get(&e.comment_id));
    if handled == Some(&signature) {
        // A redelivered or replayed comment, or an edit that kept the commands.
        return Decision::Ignore("these commands were already handled for this comment".into());
    }
    if let (Some(seq), Some(r)) = (state.received, record) {
        let newer_handled = r.handled_seq.get(&e.comment_id).is_some_and(|s| *s > seq);
        let newer_running = r
            .in_progress
            .get(&e.comment_id)
            .is_some_and(|p| p.signature != signature && p.seq.is_some_and(|s| s > seq));
        if newer_handled || newer_running {
            return Decision::Ignore(
                "a newer version of this comment was received: this one is stale".into(),
            );
        }
    }
    if let CommentAction::Edited { previous_body } = &e.action {
        let before = previous_body.as_deref().map(command_signature);
        if before.as_ref() == Some(&signature) {
            return Decision::Ignore("edited comment: its commands did not change".into());
        }
    }
    let progress = record
        .and_then(|r| r.in_progress.get(&e.comment_id))
        .filter(|p| p.signature == signature);
    let comment = CommentRef {
        pr: e.number,
        comment_id: e.comment_id,
        signature,
        seq: state.received,
    };
    let mut actions = vec![Action::React {
        comment_id: e.comment_id,
        reaction: Reaction::Eyes,
    }];
    let total = commands.len();
    let mut runs = Vec::new();
    for (index, parsed) in commands
        .into_iter()
        .take(MAX_COMMANDS_PER_COMMENT)
        .enumerate()
    {
        if let Some(run) = progress.and_then(|p| p.done.get(&index)) {
            // Ran in an earlier attempt of this delivery: neither run nor answered again.
            runs.push(run.clone());
            continue;
        }
        let (mut acts, run) = one_command(parsed, e, config, state);
        actions.append(&mut acts);
        actions.push(Action::CommandRan {
            comment: comment.clone(),
            index,
            run: run.clone(),
        });
        runs.push(run);
    }
    let not_run = total - runs.len();
    let replied = progress.is_some_and(|p| p.reply_id.is_some());
    if !replied && let Some(body) = messages::comment_reply(&e.sender.login, &runs, total, not_run)
    {
        actions.push(Action::CommentReply {
            comment: comment.clone(),
            body,
        });
    }
    // Deferred commands react when their work is done; the rest react now.
    let refused = not_run > 0 || runs.iter().any(|r| r.outcome == Ran::Refused);
    let deferred = runs.iter().any(|r| r.outcome == Ran::Deferred);
    let immediate_ok = runs.iter().any(|r| r.outcome == Ran::Done);
    if refused {
        actions.push(Action::React {
            comment_id: e.comment_id,
            reaction: Reaction::Confused,
        });
    } else if immediate_ok && !deferred {
        actions.push(Action::React {
            comment_id: e.comment_id,
            reaction: Reaction::Rocket,
        });
    }
    // Last: until it is recorded, a retry continues from the per-command record.
    actions.push(Action::CommentHandled { comment });
    Decision::act(actions)
}

/// Decide one command line of a comment: its actions and what it answers.
fn one_command(
    parsed: Result<Command, command::CommandError>,
    e: &CommentEvent,
    config: &RepoConfig,
    state: &State,
) -> (Vec<Action>, CommandRun) {
    let by = &e.sender.login;
    let refused = |why: Refusal, help: bool| {
        (
            Vec::new(),
            CommandRun {
                outcome: Ran::Refused,
                reply: Some(messages::refusal(by, &why)),
                help,
            },
        )
    };
    let cmd = match parsed {
        Ok(cmd) => cmd,
        Err(err) => return refused(Refusal::Unreadable(err), true),
    };
    let needed = required_permission(&cmd, config);
    let have = state.permission.unwrap_or(Permission::None);
    if have < needed {
        return refused(
            Refusal::Permission {
                command: command_name(&cmd),
                needed,
                have,
            },
            false,
        );
    }
    match run_command(&cmd, e, config, state) {
        Ok(CommandOutcome::Deferred(mut acts)) => (
            {
                if let Command::Promote {
                    skip_checks: true, ..
                } = &cmd
                {
                    for a in &mut acts {
                        if let Action::Deploy(d) = a {
                            d.checks = Some(messages::ci(&CiText::Skipped { by }));
                        }
                    }
                }
                acts
            },
            CommandRun {
                outcome: Ran::Deferred,
                reply: None,
                help: false,
            },
        ),
        Ok(CommandOutcome::Done {
            actions,
            reply,
            help,
        }) => (
            actions,
            CommandRun {
                outcome: Ran::Done,
                reply,
                help,
            },
        ),
        Err(why) => refused(why, false),
    }
}

fn command_name(cmd: &Command) -> String {
    match cmd {
        Command::Stage { .. } => "/stage".into(),
        Command::Promote {
            target: PromoteTarget::Staging,
            skip_checks: false,
        } => "/promote".into(),
        Command::Promote {
            target: PromoteTarget::Production,
            skip_checks: false,
        } => "/promote production".into(),
        Command::Promote {
            target: PromoteTarget::Staging,
            skip_checks: true,
        } => "/promote staging --skip-checks".into(),
        Command::Promote {
            target: PromoteTarget::Production,
            skip_checks: true,
        } => "/promote production --skip-checks".into(),
        Command::Rollback {
            target: EnvTarget::Production,
            ..
        } => "/rollback production".into(),
        Command::Rollback {
            target: EnvTarget::Staging,
            ..
        } => "/rollback staging".into(),
        Command::Rollback { .. } => "/rollback".into(),
        Command::Teardown => "/teardown".into(),
        Command::Extend { .. } => "/extend".into(),
        Command::Status => "/status".into(),
        Command::Help => "/help".into(),
    }
}

enum CommandOutcome {
    /// The work happens later (a deploy): the runner reacts when it is done.
    Deferred(Vec<Action>),
    /// Done as soon as these actions are applied; with an answer, and whether the command list
    /// goes under the reply.
    Done {
        actions: Vec<Action>,
        reply: Option<String>,
        help: bool,
    },
}

fn run_command(
    cmd: &Command,
    e: &CommentEvent,
    config: &RepoConfig,
    state: &State,
) -> Result<CommandOutcome, Refusal> {
    let pr = e.number;
    let by = &e.sender.login;
    let info = state.pr_info.as_ref();
    let preview_slug_now = info.map(|i| preview_slug(Some(i.number), &i.head_ref));
    match cmd {
        Command::Help => Ok(CommandOutcome::Done {
            actions: Vec::new(),
            reply: None,
            help: true,
        }),
        Command::Status => Ok(CommandOutcome::Done {
            actions: Vec::new(),
            reply: Some(messages::status(pr, state)),
            help: false,
        }),
        Command::Stage { profile, sha } => {
            let info = info.ok_or(Refusal::PrUnavailable)?;
            if !info.open {
                return Err(Refusal::PrClosed);
            }
            let known: Vec<&str> = match &state.head_profiles {
                Some(list) => list.iter().map(String::as_str).collect(),
                None => config.preview.profiles.keys().map(String::as_str).collect(),
            };
            if let Some(p) = profile
                && !known.contains(&p.as_str())
            {
                return Err(Refusal::UnknownProfile {
                    profile: p.clone(),
                    known: known.iter().map(|k| (*k).to_owned()).collect(),
                });
            }
            let commit = stage_commit(info, profile.as_deref(), sha.as_deref(), state)?;
            let slug = preview_slug(Some(info.number), &info.head_ref);
            let mut actions = Vec::new();
            if info.fork {
                actions.push(Action::ApproveFork {
                    pr,
                    sha: commit.clone(),
                });
            }
            let queue = must_queue(state, &slug);
            actions.push(Action::Deploy(Deploy {
                target: Target {
                    kind: EnvKind::Preview,
                    slug,
                    branch: info.head_ref.clone(),
                    pr: Some(pr),
                    clone_url: Some(info.head_clone_url.clone()),
                    fork: info.fork,
                },
                sha: commit,
                trigger: Trigger::Stage,
                by: by.clone(),
                ack: Some(e.comment_id),
                force: true,
                profile: profile.clone(),
                gate: None,
                checks: None,
                queue,
                ttl: Some(ttl_of(config)),
            }));
            Ok(CommandOutcome::Deferred(actions))
        }
        Command::Promote { target, .. } => {
            let slug = preview_slug_now.ok_or(Refusal::PrUnavailable)?;
            let live_preview = state.active_env(&slug).filter(|env| {
                env.current_release().is_some() && env.state() != EnvState::TearingDown
            });
            let closed =
                info.is_some_and(|i| !i.open) || state.pr_record.as_ref().is_some_and(|r| r.closed);
            if live_preview.is_none() && closed && *target == PromoteTarget::Production {
                let merged = info.is_some_and(|i| i.merged)
                    || state
                        .pr_record
                        .as_ref()
                        .is_some_and(|r| r.merge_sha.is_some());
                if !merged {
                    return Err(Refusal::ClosedUnmerged);
                }
                let merge = state
                    .pr_record
                    .as_ref()
                    .and_then(|r| r.merge_sha.as_ref())
                    .ok_or(Refusal::MergeUnknown)?;
                let deploy = promote_merge_from_staging(merge, pr, by, e.comment_id, state)?;
                return Ok(CommandOutcome::Deferred(vec![Action::Deploy(deploy)]));
            }
            let env = live_preview.ok_or(Refusal::NoPreviewToPromote)?;
            let n = env.current_release().unwrap_or_default();
            let release = state
                .releases_of(&slug)
                .iter()
                .find(|r| r.n == n)
                .ok_or(Refusal::LiveReleaseUnknown)?;
            let (kind, target_slug) = match target {
                PromoteTarget::Staging => (EnvKind::Staging, Slug::staging()),
                PromoteTarget::Production => (EnvKind::Production, Slug::production()),
            };
            // Staging and production always fetch from this repository, never from a fork
            // (GitHub keeps every PR's commits there, under `refs/pull/<n>/head`).
            Ok(CommandOutcome::Deferred(vec![Action::Deploy(promotion(
                (kind, target_slug),
                &slug,
                release,
                (&env.branch, Some(pr)),
                by,
                Some(e.comment_id),
            ))]))
        }
        Command::Rollback { target, to } => {
            let slug = match target {
                EnvTarget::Preview => preview_slug_now.ok_or(Refusal::PrUnavailable)?,
                EnvTarget::Staging => Slug::staging(),
                EnvTarget::Production => Slug::production(),
            };
            let env = state
                .active_env(&slug)
                .ok_or_else(|| Refusal::NoEnvironmentToRollBack { slug: slug.clone() })?;
            let releases = state.releases_of(&slug);
            let release = pick_rollback(env, releases, to.as_ref())?;
            let trigger = Trigger::Rollback {
                to_release: release.n,
            };
            Ok(CommandOutcome::Deferred(vec![Action::Deploy(
                redeploy_release(env, release, trigger, by, Some(e.comment_id), state),
            )]))
        }
        Command::Teardown => {
            let slug = preview_slug_now.ok_or(Refusal::PrUnavailable)?;
            if state.active_env(&slug).is_none() {
                return Err(Refusal::NothingToTearDown);
            }
            Ok(CommandOutcome::Deferred(vec![Action::Teardown {
                slug,
                reason: format!("/teardown by @{by}"),
                by: by.clone(),
                ack: Some(e.comment_id),
            }]))
        }
        Command::Extend { by: extra } => {
            let slug = preview_slug_now.ok_or(Refusal::PrUnavailable)?;
            let env = state.active_env(&slug).ok_or(Refusal::NoPreviewToExtend)?;
            let base = env.expires_at().unwrap_or(state.now).max(state.now);
            let wanted = add(base, *extra);
            let cap = add(state.now, state.limits.max_extend);
            // The cap limits how far an extension goes; it never shortens the current expiry.
            let until = wanted.min(cap).max(base);
            let reply =
                (wanted > cap).then(|| messages::extend_capped(by, state.limits.max_extend, until));
            Ok(CommandOutcome::Done {
                actions: vec![
                    Action::Extend { slug, until },
                    Action::Sticky { pr, notice: None },
                ],
                reply,
                help: false,
            })
        }
    }
}

/// `/promote production` on a merged pull request: the live staging release, if it runs the
/// PR's merge commit; otherwise an answer saying what staging runs and why it cannot be promoted.
fn promote_merge_from_staging(
    merge: &Sha,
    pr: PrNumber,
    by: &str,
    comment_id: u64,
    state: &State,
) -> Result<Deploy, Refusal> {
    let staging = Slug::staging();
    let env = state.active_env(&staging);
    let live = env.and_then(|env| {
        let n = env.current_release()?;
        state.releases_of(&staging).iter().find(|r| r.n == n)
    });
    let deploying = env.and_then(|env| match &env.op() {
        Some(Op::Deploy { sha, .. }) => Some(sha),
        _ => None,
    });
    match (env, live) {
        (Some(env), Some(release)) if release.sha == *merge => Ok(promotion(
            (EnvKind::Production, Slug::production()),
            &staging,
            release,
            (&env.branch, Some(pr)),
            by,
            Some(comment_id),
        )),
        _ if deploying == Some(merge) => Err(Refusal::StagingStillDeploying {
            merge: merge.clone(),
        }),
        (Some(_), Some(release)) => Err(Refusal::StagingRunsAnother {
            sha: release.sha.clone(),
            release: release.n,
            merge: merge.clone(),
        }),
        _ => Err(Refusal::StagingNotLive {
            merge: merge.clone(),
        }),
    }
}

/// The operator's promotion (`stagebot promote OWNER/REPO [--from ENV] [--release N]`): release
/// `release` of `from` (default: its live release) to production, by `operator`.
pub fn operator_promote(
    from: &Slug,
    release: Option<u32>,
    state: &State,
    config: &RepoConfig,
) -> Result<Deploy, String> {
    let env = state
        .active_env(from)
        .ok_or_else(|| format!("there is no active `{from}` environment to promote from."))?;
    let n = release
        .or(env.current_release())
        .ok_or_else(|| format!("`{from}` has no live release to promote."))?;
    let release = state
        .releases_of(from)
        .iter()
        .find(|r| r.n == n)
        .ok_or_else(|| format!("`{from}` has no release #{n}."))?;
    if *from == Slug::production() {
        return Err(
            "production cannot be promoted to itself: name another environment with --from.".into(),
        );
    }
    Ok(with_gate(
        promotion(
            (EnvKind::Production, Slug::production()),
            from,
            release,
            (&release.git_ref, release.pr),
            "operator",
            None,
        ),
        config,
    ))
}

/// A promotion of `release` of environment `from` to `to`: a deploy of its commit, fetched from
/// this repository (never a fork), recorded as promoted from `from` #n.
fn promotion(
    to: (EnvKind, Slug),
    from: &Slug,
    release: &Release,
    (branch, pr): (&str, Option<PrNumber>),
    by: &str,
    ack: Option<u64>,
) -> Deploy {
    Deploy {
        target: Target {
            kind: to.0,
            slug: to.1,
            branch: branch.to_owned(),
            pr,
            clone_url: None,
            fork: false,
        },
        sha: release.sha.clone(),
        trigger: Trigger::Promote {
            from: from.clone(),
            release: Some(release.n),
        },
        by: by.to_owned(),
        ack,
        force: false,
        profile: None,
        gate: None,
        checks: None,
        queue: false,
        ttl: None,
    }
}

/// Digits a fork's commit must be named with in `/stage <sha>` when stagebot received it only
/// after the comment: 12 hex digits (48 bits) cannot be matched by grinding commits.
pub const FORK_LATE_SHA_DIGITS: usize = 12;

/// The commit `/stage` deploys (docs/commands.md, "Fork pull requests"):
/// - `/stage <sha>`: that commit, which must be the PR's head now or a head stagebot saw (on a
///   fork, one received only after the comment needs [`FORK_LATE_SHA_DIGITS`] digits);
/// - `/stage` on a fork: the head as stagebot recorded it from the events it received before
///   the comment (never judged by commit dates, which a fork author can forge); if GitHub's
///   head moved since, nothing is deployed and the answer names the commit to approve;
/// - `/stage` on a branch of this repository: its head now.
fn stage_commit(
    info: &PrInfo,
    profile: Option<&str>,
    wanted: Option<&str>,
    state: &State,
) -> Result<Sha, Refusal> {
    let record = state.pr_record.as_ref();
    let profile = profile.map(str::to_owned);
    if let Some(prefix) = wanted {
        let mut found: Vec<&Sha> = Vec::new();
        // On a fork, a commit stagebot received only after the comment (or not at all) must be
        // named with at least FORK_LATE_SHA_DIGITS digits: a fork author who grinds a commit
        // matching the maintainer's short prefix and pushes it right after the comment must not
        // get it deployed. Heads received before the comment match any 7-digit prefix.
        let long = prefix.len() >= FORK_LATE_SHA_DIGITS;
        let before = |seq: u64| state.received.is_none_or(|b| seq < b);
        let seen = record.into_iter().flat_map(|r| {
            r.heads
                .iter()
                .filter(|(seq, _)| !info.fork || long || before(*seq))
                .map(|(_, s)| s)
        });
        let head_now = (!info.fork || long).then_some(&info.head_sha);
        for sha in head_now.into_iter().chain(seen) {
            if sha.matches_prefix(prefix) && !found.contains(&sha) {
                found.push(sha);
            }
        }
        return match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Refusal::NotACommit {
                prefix: prefix.to_owned(),
                head: info.head_sha.clone(),
                fork_digits: (info.fork && !long).then_some(FORK_LATE_SHA_DIGITS),
            }),
            _ => Err(Refusal::AmbiguousCommit {
                prefix: prefix.to_owned(),
            }),
        };
    }
    if !info.fork {
        return Ok(info.head_sha.clone());
    }
    match record.and_then(|r| r.head_before(state.received)) {
        None => Err(Refusal::ForkHeadUnknown {
            head: info.head_sha.clone(),
            profile,
        }),
        Some(seen) if *seen != info.head_sha => Err(Refusal::ForkHeadMoved {
            head: info.head_sha.clone(),
            seen: seen.clone(),
            profile,
        }),
        Some(seen) => Ok(seen.clone()),
    }
}

/// `t + d`, saturating at the latest representable time instead of panicking.
fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The release a rollback goes to: the one named, or the newest one older than the live one
/// that ran a different commit.
fn pick_rollback<'a>(
    env: &EnvRecord,
    releases: &'a [Release],
    to: Option<&RollbackTo>,
) -> Result<&'a Release, Refusal> {
    match to {
        Some(RollbackTo::Release(n)) => {
            releases
                .iter()
                .find(|r| r.n == *n)
                .ok_or_else(|| Refusal::NoSuchRelease {
                    slug: env.id.slug.clone(),
                    release: *n,
                })
        }
        Some(RollbackTo::Sha(prefix)) => releases
            .iter()
            .rev()
            .find(|r| r.sha.matches_prefix(prefix))
            .ok_or_else(|| Refusal::NoReleaseOfCommit {
                slug: env.id.slug.clone(),
                prefix: prefix.clone(),
            }),
        None => {
            let current = env.current_release().unwrap_or(u32::MAX);
            let live_sha = releases.iter().find(|r| r.n == current).map(|r| &r.sha);
            releases
                .iter()
                .rev()
                .filter(|r| r.n < current)
                .find(|r| Some(&r.sha) != live_sha)
                .ok_or_else(|| Refusal::NoEarlierRelease {
                    slug: env.id.slug.clone(),
                })
        }
    }
}

/// A deploy of `release` of `env` again (a rollback, or the dashboard's redeploy): forced, with
/// the environment's profile and TTL; only a preview fetches from where it came from.
fn redeploy_release(
    env: &EnvRecord,
    release: &Release,
    trigger: Trigger,
    by: &str,
    ack: Option<u64>,
    state: &State,
) -> Deploy {
    let preview = env.kind == EnvKind::Preview;
    Deploy {
        target: Target {
            kind: env.kind,
            slug: env.id.slug.clone(),
            branch: env.branch.clone(),
            pr: env.pr,
            // Only a preview fetches from where it came from (maybe a fork).
            clone_url: preview.then(|| env.clone_url.clone()),
            fork: preview && env.fork,
        },
        sha: release.sha.clone(),
        trigger,
        by: by.to_owned(),
        ack,
        force: true,
        profile: env.profile.clone(),
        gate: None,
        checks: None,
        queue: preview && must_queue(state, &env.id.slug),
        ttl: env.ttl_secs.map(Duration::from_secs),
    }
}

/// Where a deploy's CI gate stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    /// Go on; what allowed it, recorded on the release.
    Pass(String),
    /// Not yet: what it waits for, as the sticky comment and the GitHub deployment say.
    Wait(String),
    /// A required check failed: the deploy fails with this error, naming the failing checks.
    Fail(String),
}

/// The CI gate (`require_checks`) on a commit's check runs and statuses. stagebot's own
/// `stagebot/*` statuses never count. With a list, each named check or status must exist and
/// have succeeded; with `true`, at least one must exist and all must be complete and successful.
/// A name reported more than once (a re-run) counts by its first result, GitHub's newest.
pub fn ci_gate(gate: &CiGate, results: &[crate::github::CiResult]) -> GateVerdict {
    use crate::github::CiState;
    let mut seen: Vec<(&str, Option<CiState>)> = Vec::new();
    for r in results.iter().filter(|r| !r.name.starts_with("stagebot/")) {
        if !seen.iter().any(|(n, _)| *n == r.name) {
            seen.push((&r.name, Some(r.state)));
        }
    }
    let considered: Vec<(&str, Option<CiState>)> = match gate {
        CiGate::All => seen,
        CiGate::Named(names) => names
            .iter()
            .map(|n| {
                let state = seen
                    .iter()
                    .find(|(s, _)| *s == n.as_str())
                    .and_then(|x| x.1);
                (n.as_str(), state)
            })
            .collect(),
    };
    let failed: Vec<&str> = considered
        .iter()
        .filter(|(_, s)| *s == Some(CiState::Failure))
        .map(|(n, _)| *n)
        .collect();
    if !failed.is_empty() {
        return GateVerdict::Fail(messages::ci(&CiText::Failed(&failed)));
    }
    let passed: Vec<&str> = considered
        .iter()
        .filter(|(_, s)| *s == Some(CiState::Success))
        .map(|(n, _)| *n)
        .collect();
    if considered.is_empty() {
        return GateVerdict::Wait(messages::ci(&CiText::NothingReported));
    }
    if passed.len() == considered.len() {
        return GateVerdict::Pass(messages::ci(&CiText::Passed(&passed)));
    }
    let pending: Vec<&str> = considered
        .iter()
        .filter(|(_, s)| *s == Some(CiState::Pending))
        .map(|(n, _)| *n)
        .collect();
    let missing: Vec<&str> = considered
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| *n)
        .collect();
    GateVerdict::Wait(messages::ci(&CiText::Waiting {
        passed: passed.len(),
        total: considered.len(),
        pending: &pending,
        missing: &missing,
    }))
}

/// The sweeper's decision for one repository's environments at `now`: previews idle past their
/// expiry are torn down; those within the warning window get one warning first.
pub fn sweep(envs: &[EnvRecord], now: DateTime<Utc>) -> Vec<Action> {
    sweep_with_visits(envs, |_| None, now)
}

/// The sweeper's rule with the proxy's record of visits (`last_visit` of a slug, this run of
/// stagebot): a preview is active while it serves traffic, as well as on deploys and commands.
/// A visit newer than the recorded activity moves the expiry to the visit plus the TTL (never
/// earlier) and is recorded; a preview visited within its TTL is neither warned nor swept.
pub fn sweep_with_visits(
    envs: &[EnvRecord],
    last_visit: impl Fn(&Slug) -> Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for env in envs
        .iter()
        .filter(|e| e.kind == EnvKind::Preview && e.is_active() && e.op().is_none())
    {
        let Some(mut expires) = env.expires_at() else {
            continue;
        };
        if let Some(at) = last_visit(&env.id.slug)
            .filter(|at| *at > env.last_activity && env.last_visit.is_none_or(|seen| *at > seen))
        {
            let until = env.ttl_secs.map(|ttl| {
                let by_visit = at
                    .checked_add_signed(chrono::Duration::seconds(
                        i64::try_from(ttl).unwrap_or(i64::MAX),
                    ))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                by_visit.max(expires)
            });
            actions.push(Action::Visited {
                slug: env.id.slug.clone(),
                at,
                until,
            });
            if let Some(u) = until {
                expires = u;
            }
            if now < expires {
                continue;
            }
        }
        if now >= expires {
            actions.push(Action::Teardown {
                slug: env.id.slug.clone(),
                reason: format!(
                    "no activity since {}: previews are removed after their TTL",
                    env.last_activity.format("%Y-%m-%d %H:%M UTC")
                ),
                by: "stagebot".into(),
                ack: None,
            });
        } else if env.warned_at().is_none() && now >= expires - warning_window(env) {
            actions.push(Action::WarnExpiry {
                slug: env.id.slug.clone(),
                at: expires,
            });
        }
    }
    actions
}

/// A day before expiry, or a quarter of the TTL when that is shorter.
pub fn warning_window(env: &EnvRecord) -> chrono::Duration {
    let day = chrono::Duration::days(1);
    match env.ttl_secs {
        Some(ttl) => day.min(chrono::Duration::seconds((ttl / 4) as i64)),
        None => day,
    }
}

/// Which queued previews may start now that `in_use` slots are taken (oldest first).
pub fn dequeue(queued: &[EnvRecord], in_use: usize, limits: &Limits) -> Vec<Slug> {
    let free = match limits.max_previews {
        Some(max) => max.saturating_sub(in_use),
        None => usize::MAX,
    };
    let mut waiting: Vec<&EnvRecord> = queued
        .iter()
        .filter(|e| e.state() == EnvState::Queued && matches!(e.op(), Some(Op::Deploy { .. })))
        .collect();
    waiting.sort_by_key(|e| e.queued_at());
    waiting
        .into_iter()
        .take(free)
        .map(|e| e.id.slug.clone())
        .collect()
}

/// Which database an environment gets (docs/configuration.md, `database`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabasePlan {
    /// stagebot creates nothing and passes nothing: no `database.postgres` in the config on the
    /// default branch, no `STAGEBOT_POSTGRES_URL`, or production (its URL comes from
    /// `production.env`; stagebot never creates nor drops it).
    None,
    /// A database of its own, `<repo>_<slug>`, cloned from the snapshot on the first deploy and
    /// kept across redeploys. Dropped at teardown when `drop_on_teardown` (previews and branch
    /// environments); staging's is created once and never dropped.
    Own { drop_on_teardown: bool },
    /// Staging's database (`database: shared` in the profile): nothing created, nothing dropped.
    SharedStaging,
}

/// The database rule for an environment of `kind`, with `profile` (read on the default branch, so
/// a pull request cannot point its preview at another database). `server` is whether the
/// operator configured a PostgreSQL server.
pub fn database_plan(
    server: bool,
    config: &RepoConfig,
    kind: EnvKind,
    profile: Option<&str>,
) -> DatabasePlan {
    if !server || config.database.postgres.is_none() {
        return DatabasePlan::None;
    }
    match kind {
        EnvKind::Production => DatabasePlan::None,
        EnvKind::Staging => DatabasePlan::Own {
            drop_on_teardown: false,
        },
        EnvKind::Preview => {
            let shared = profile
                .and_then(|p| config.preview.profiles.get(p))
                .is_some_and(|p| p.database == crate::repo_config::DatabaseMode::Shared);
            if shared {
                DatabasePlan::SharedStaging
            } else {
                DatabasePlan::Own {
                    drop_on_teardown: true,
                }
            }
        }
    }
}

/// Whether tearing down an environment of `kind` drops its database (previews and branch
/// environments only; a `shared` preview has no database of its own, so dropping its name is a
/// no-op). Needs no configuration: a database left from an earlier config still goes.
pub fn drops_database_on_teardown(kind: EnvKind) -> bool {
    kind == EnvKind::Preview
}

/// An action a signed-in user takes on the dashboard's environment page (docs/dashboard.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DashboardAction {
    /// Deploy the environment's live release to staging or production.
    Promote { to: PromoteTarget },
    /// Deploy release `to` of the environment again.
    Rollback { to: u32 },
    /// Deploy the live release again.
    Redeploy,
    /// Push a preview's expiry out by this long (capped like `/extend`).
    Extend { by: Duration },
    /// Tear a preview down.
    Teardown,
}

impl DashboardAction {
    /// The slash command that does the same: its permission rule is this action's.
    pub fn as_command(&self, kind: EnvKind) -> Command {
        let target = match kind {
            EnvKind::Preview => EnvTarget::Preview,
            EnvKind::Staging => EnvTarget::Staging,
            EnvKind::Production => EnvTarget::Production,
        };
        match self {
            DashboardAction::Promote { to } => Command::Promote {
                target: *to,
                skip_checks: false,
            },
            DashboardAction::Rollback { to } => Command::Rollback {
                target,
                to: Some(RollbackTo::Release(*to)),
            },
            DashboardAction::Redeploy => Command::Rollback { target, to: None },
            DashboardAction::Extend { by } => Command::Extend { by: *by },
            DashboardAction::Teardown => Command::Teardown,
        }
    }
}

/// A dashboard action on environment `slug` by `actor`, who has `permission` on the
/// repository (asked of GitHub as for a comment's sender): the same rules as the slash command
/// it stands for ([`DashboardAction::as_command`], [`required_permission`]), recorded as that
/// user's, and announced on the environment's pull request. `Err` is the answer for the page.
pub fn dashboard(
    slug: &Slug,
    action: &DashboardAction,
    actor: &str,
    permission: Permission,
    config: &RepoConfig,
    state: &State,
) -> Result<Vec<Action>, String> {
    let env = state
        .active_env(slug)
        .filter(|e| e.state() != EnvState::TearingDown)
        .ok_or_else(|| format!("there is no active `{slug}` environment."))?;
    let cmd = action.as_command(env.kind);
    let needed = required_permission(&cmd, config);
    if permission < needed {
        return Err(format!(
            "{} needs **{needed}** permission on this repository; @{actor} has **{permission}**. Nothing was done.",
            command_name(&cmd)
        ));
    }
    let dashboard = |then: Trigger| Trigger::Dashboard {
        then: Box::new(then),
    };
    let live = || {
        env.current_release()
            .and_then(|n| state.releases_of(slug).iter().find(|r| r.n == n))
            .ok_or_else(|| format!("`{slug}` has no live release."))
    };
    let mut release = None;
    let mut actions = match action {
        DashboardAction::Promote { to } => {
            let (kind, to_slug) = match to {
                PromoteTarget::Staging => (EnvKind::Staging, Slug::staging()),
                PromoteTarget::Production => (EnvKind::Production, Slug::production()),
            };
            if env.kind >= kind {
                return Err(format!(
                    "`{slug}` cannot be promoted to {to_slug}: promotions go previews → staging → production."
                ));
            }
            let r = live()?;
            release = Some((r.n, r.sha.clone()));
            let mut d = promotion((kind, to_slug), slug, r, (&env.branch, env.pr), actor, None);
            d.trigger = dashboard(d.trigger);
            vec![Action::Deploy(with_gate(d, config))]
        }
        DashboardAction::Rollback { to } => {
            let r = pick_rollback(
                env,
                state.releases_of(slug),
                Some(&RollbackTo::Release(*to)),
            )
            .map_err(|r| messages::refusal_reason(&r))?;
            release = Some((r.n, r.sha.clone()));
            let trigger = dashboard(Trigger::Rollback { to_release: r.n });
            vec![Action::Deploy(redeploy_release(
                env, r, trigger, actor, None, state,
            ))]
        }
        DashboardAction::Redeploy => {
            let r = live()?;
            release = Some((r.n, r.sha.clone()));
            let trigger = dashboard(Trigger::Redeploy { release: r.n });
            vec![Action::Deploy(redeploy_release(
                env, r, trigger, actor, None, state,
            ))]
        }
        DashboardAction::Extend { by } => {
            if env.kind != EnvKind::Preview {
                return Err(format!(
                    "`{slug}` does not expire: only previews are extended."
                ));
            }
            let base = env.expires_at().unwrap_or(state.now).max(state.now);
            let until = add(base, *by)
                .min(add(state.now, state.limits.max_extend))
                .max(base);
            vec![Action::Extend {
                slug: slug.clone(),
                until,
            }]
        }
        DashboardAction::Teardown => {
            if env.kind != EnvKind::Preview {
                return Err(format!(
                    "`{slug}` is a shared environment: only previews are torn down from the dashboard (an operator uses `stagebot env teardown`)."
                ));
            }
            vec![Action::Teardown {
                slug: slug.clone(),
                reason: format!("torn down from the dashboard by @{actor}"),
                by: actor.to_owned(),
                ack: None,
            }]
        }
    };
    // Announced where the team looks: the sticky comment of the environment's pull request.
    if let Some(pr) = env.pr {
        actions.push(Action::Sticky {
            pr,
            notice: Some(Notice::Dashboard {
                actor: actor.to_owned(),
                action: action.clone(),
                slug: slug.clone(),
                release,
            }),
        });
    }
    Ok(actions)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
pub(crate) mod tests;
