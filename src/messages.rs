//! Every text stagebot posts to GitHub, in one place: the PR's sticky comment, the replies to
//! command comments (answers, refusals, `/status`, `/help`), the expiry warning, the sticky
//! comment's notices, the CI gate's texts, and the descriptions of commit statuses and
//! deployments. Each is a function of typed data; callers pass data and never format a text
//! the bot posts. Values a stranger controls (errors quoting config files, log tails, profile
//! names, commit prefixes) go through [`crate::markdown`] so they cannot format, mention or
//! link anything.
//!
//! Every function has golden files under `fixtures/messages/` (the tests at the end of this
//! file): `STAGEBOT_BLESS=1 cargo test --lib messages` rewrites them after an intended change,
//! and a file no test produces fails the tests.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::command::{ArgProblem, CommandError, Problem};
use crate::environment::{EnvRecord, EnvState, Release, Trigger};
use crate::markdown;
use crate::policy::{GITHUB_COMMENT_LIMIT, MAX_COMMANDS_PER_COMMENT, Notice, State};
use crate::store::{CommandRun, PrRecord};
use crate::types::{EnvKind, Permission, PrNumber, Sha, Slug};

/// Room kept free under [`GITHUB_COMMENT_LIMIT`] for the reply's hidden marker and the note
/// saying it was cut.
const REPLY_RESERVE: usize = 1_024;

// ---------------------------------------------------------------------------------------------
// The sticky comment

/// One row of the sticky comment: the environment, its live release, and its position in the
/// installation's queue when it is queued.
pub type StickyRow = (EnvRecord, Option<Release>, Option<usize>);

/// An environment's error stream in the sticky comment: the link to its Sentry issues
/// (environment and `release:<commit>`) and how many are new in the live release (`None`:
/// Sentry did not answer and nothing is cached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorStream {
    pub slug: Slug,
    pub sha: Sha,
    pub link: String,
    pub new_issues: Option<usize>,
}

/// The sticky comment's markdown (without the hidden marker, which the client adds): the PR's
/// notice, a table of its environments, Sentry error streams, failures with their log tails,
/// CI waits, removals and expiry warnings, and the command list.
pub fn sticky(
    pr: &PrRecord,
    rows: &[StickyRow],
    now: DateTime<Utc>,
    errors: &[ErrorStream],
) -> String {
    let mut out = String::from("### 🚀 stagebot\n\n");
    if let Some(notice) = &pr.notice {
        out.push_str(&format!("> {notice}\n\n"));
    }
    if rows.is_empty() {
        if pr.notice.is_none() {
            out.push_str(
                "No environment for this pull request yet. Comment `/stage` to deploy one.\n\n",
            );
        }
    } else {
        out.push_str("| Environment | State | URL | Commit | Last deploy | Expires |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for (env, release, queue) in rows {
            let url = if matches!(
                env.state(),
                EnvState::Live | EnvState::Failed | EnvState::Deploying
            ) && release.is_some()
            {
                format!(
                    "[{}]({})",
                    env.url
                        .trim_start_matches("http://")
                        .trim_start_matches("https://"),
                    env.url
                )
            } else {
                "—".into()
            };
            let commit = match (&env.deploying(), release) {
                (Some(sha), _) => format!("`{}` (deploying)", sha.short()),
                (None, Some(r)) => format!("`{}`", r.sha.short()),
                _ => "—".into(),
            };
            let last = release
                .as_ref()
                .map(|r| {
                    format!(
                        "#{} {} by @{}",
                        r.n,
                        r.at.format("%Y-%m-%d %H:%M UTC"),
                        r.by
                    )
                })
                .unwrap_or_else(|| "—".into());
            let expires = match (env.state(), env.expires_at()) {
                (EnvState::Destroyed, _) => "—".into(),
                (_, Some(t)) => match env.last_visit {
                    Some(v) => format!("{}: last visited {}", relative(t, now), ago(v, now)),
                    None => format!("{}: no visits since deploy", relative(t, now)),
                },
                _ => "never".into(),
            };
            let mut state = state_label(env);
            if let Some(p) = queue {
                state.push_str(&format!(" (position {p})"));
            }
            out.push_str(&format!(
                "| {} `{}` | {state} | {url} | {commit} | {last} | {expires} |\n",
                env.kind, env.id.slug
            ));
        }
        out.push('\n');
        for e in errors {
            let count = match e.new_issues {
                None => "issues (count unavailable)".to_owned(),
                Some(0) => "no new issues".to_owned(),
                Some(1) => "1 new issue".to_owned(),
                Some(n) if n >= 100 => "100+ new issues".to_owned(),
                Some(n) => format!("{n} new issues"),
            };
            out.push_str(&format!(
                "🐞 `{}`: [{count}]({}) in Sentry since `{}`\n",
                e.slug,
                e.link,
                e.sha.short()
            ));
        }
        if !errors.is_empty() {
            out.push('\n');
        }
        for (env, _, _) in rows {
            if env.state() == EnvState::Failed
                && let Some(err) = &env.last_error
            {
                // The error quotes config files and git: shown as code, never as markdown.
                out.push_str(&format!(
                    "**`{}` failed:** {}\n",
                    env.id.slug,
                    markdown::inert(err)
                ));
                if let Some(tail) = &env.last_log_tail {
                    let fence = fence_for(tail);
                    out.push_str(&format!(
                        "\n<details><summary>Log tail</summary>\n\n{fence}\n{}\n{fence}\n</details>\n\n",
                        tail.trim_end()
                    ));
                }
            }
            if let Some(wait) = env.ci_wait().as_ref().filter(|_| env.op().is_some()) {
                // Built by `ci` below; check names in it are code spans.
                out.push_str(&format!(
                    "⏳ **`{}`** {}{wait}.\n\n",
                    env.id.slug,
                    env.attempted()
                        .as_ref()
                        .map(|s| format!("(commit `{}`): ", s.short()))
                        .unwrap_or_default()
                ));
            }
            if env.state() == EnvState::Destroyed {
                out.push_str(&format!(
                    "`{}` was removed. Comment `/stage` to bring it back.\n\n",
                    env.id.slug
                ));
            }
            if env.warned_at().is_some()
                && env.is_active()
                && let Some(t) = env.expires_at()
            {
                out.push_str(&format!(
                    "⏳ `{}` will be removed {} for inactivity: comment `/extend 2d` to keep it.\n\n",
                    env.id.slug,
                    relative(t, now)
                ));
            }
        }
    }
    out.push_str("<details><summary>Commands</summary>\n\n");
    out.push_str(&help());
    out.push_str("\n</details>\n");
    out
}

/// The sticky comment's note for a [`Notice`] (kept with the PR's record until it changes).
pub fn notice(n: &Notice) -> String {
    match n {
        Notice::Draft => "This pull request is a draft: its preview starts when it is marked ready for review, or comment `/stage`.".into(),
        Notice::Fork => "This pull request comes from a fork, so it is not deployed automatically. A maintainer can comment `/stage` to deploy the head commit they reviewed (or `/stage <sha>` for a given commit of this pull request).".into(),
        Notice::ForkNeedsApproval { sha } => format!(
            "New commits were pushed to this fork (`{}`): a maintainer must review them and comment `/stage` again (or `/stage {}`) to deploy them.",
            sha.short(),
            sha.short()
        ),
        Notice::OnDemand => "Previews are on demand in this repository: comment `/stage` to get one.".into(),
        Notice::Closed => "This pull request is closed; it has no environment.".into(),
        Notice::Dashboard {
            actor,
            action,
            slug,
            release,
        } => dashboard(actor, action, slug, release.as_ref()),
    }
}

/// The sticky comment's note after an action on the dashboard: "`production` rolled back to
/// #1 (`abc1234`) from the dashboard by @ada."
pub fn dashboard(
    actor: &str,
    action: &crate::policy::DashboardAction,
    slug: &crate::types::Slug,
    release: Option<&(u32, crate::types::Sha)>,
) -> String {
    use crate::policy::DashboardAction as A;
    let rel = release
        .map(|(n, sha)| format!(" #{n} (`{}`)", sha.short()))
        .unwrap_or_default();
    let did = match action {
        A::Promote { to } => {
            let to = match to {
                crate::command::PromoteTarget::Staging => "staging",
                crate::command::PromoteTarget::Production => "production",
            };
            format!("`{slug}`{rel} promoted to `{to}`")
        }
        A::Rollback { .. } => format!("`{slug}` rolled back to{rel}"),
        A::Redeploy => format!("`{slug}` redeployed{rel}"),
        A::Extend { by } => format!(
            "`{slug}` extended by {}",
            crate::command::format_duration(*by)
        ),
        A::Teardown => format!("`{slug}` torn down"),
    };
    // A GitHub login (letters, digits, hyphens), as GitHub's own mention.
    format!("{did} from the dashboard by @{actor}.")
}

/// A code fence longer than any run of backticks in `text`, so a log cannot close it early.
fn fence_for(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

fn state_label(env: &EnvRecord) -> String {
    match env.state() {
        EnvState::Pending => "⏳ pending".into(),
        EnvState::Queued => "⏸️ queued".into(),
        EnvState::Deploying => "🔄 deploying".into(),
        EnvState::Live => "✅ live".into(),
        EnvState::Failed if env.current_release().is_some() => {
            "❌ failed (previous release still serving)".into()
        }
        EnvState::Failed => "❌ failed".into(),
        EnvState::TearingDown => "🧹 tearing down".into(),
        EnvState::Destroyed => "🗑️ removed".into(),
    }
}

/// How long ago `at` was: `just now`, `5m ago`, `3h ago`, `2d ago`.
fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds().max(0);
    match secs {
        0..60 => "just now".into(),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// "in 2d 23h", "in 5h 10m", "in 12m": the two largest units, rounded down to the minute.
fn relative(to: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (to - now).num_seconds();
    if secs < 60 {
        return "in under a minute".into();
    }
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    match (d, h, m) {
        (0, 0, m) => format!("in {m}m"),
        (0, h, 0) => format!("in {h}h"),
        (0, h, m) => format!("in {h}h {m}m"),
        (d, 0, _) => format!("in {d}d"),
        (d, h, _) => format!("in {d}d {h}h"),
    }
}

// ---------------------------------------------------------------------------------------------
// Comments of their own

/// The sweeper's one warning before an idle preview is removed at `at`.
pub fn expiry_warning(slug: &Slug, at: DateTime<Utc>) -> String {
    format!(
        "⏳ The preview `{slug}` has had no activity and will be removed at {} (UTC). Comment `/extend 2d` to keep it longer, or push a commit.",
        at.format("%Y-%m-%d %H:%M")
    )
}

// ---------------------------------------------------------------------------------------------
// Replies to command comments

/// Why a command was not run. Rendered by [`refusal`], addressed to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The line is not a command stagebot can read (its message is already safe markdown).
    Unreadable(CommandError),
    /// The sender's permission is below what the command needs.
    Permission {
        /// The command as written in help (`/promote production`).
        command: String,
        needed: Permission,
        have: Permission,
    },
    /// GitHub did not answer for the pull request.
    PrUnavailable,
    /// `/stage` on a closed pull request.
    PrClosed,
    /// `/stage <profile>` with a profile the head's config does not define (`known`: those it
    /// does, from the pull request's own config).
    UnknownProfile { profile: String, known: Vec<String> },
    /// `/stage <sha>` with a prefix that is no commit of the pull request.
    NotACommit {
        prefix: String,
        head: Sha,
        /// On a fork with a short prefix: how many digits a newer commit needs.
        fork_digits: Option<usize>,
    },
    /// `/stage <sha>` with a prefix of several commits.
    AmbiguousCommit { prefix: String },
    /// `/stage` on a fork whose head before the comment stagebot never saw.
    ForkHeadUnknown { head: Sha, profile: Option<String> },
    /// `/stage` on a fork whose head moved after the comment.
    ForkHeadMoved {
        head: Sha,
        seen: Sha,
        profile: Option<String>,
    },
    /// `/promote production` on a pull request closed without a merge.
    ClosedUnmerged,
    /// `/promote production` on a merged pull request whose merge commit was not recorded.
    MergeUnknown,
    /// `/promote production` of a merged PR while staging deploys its merge commit.
    StagingStillDeploying { merge: Sha },
    /// `/promote production` of a merged PR while staging runs another commit.
    StagingRunsAnother { sha: Sha, release: u32, merge: Sha },
    /// `/promote production` of a merged PR while staging has no live release.
    StagingNotLive { merge: Sha },
    /// `/promote` without a live preview.
    NoPreviewToPromote,
    /// The preview's live release is missing from the store.
    LiveReleaseUnknown,
    /// `/rollback` of an environment that does not exist.
    NoEnvironmentToRollBack { slug: Slug },
    /// `/rollback <n>` of a release that does not exist.
    NoSuchRelease { slug: Slug, release: u32 },
    /// `/rollback <sha>` of a commit no release ran.
    NoReleaseOfCommit { slug: Slug, prefix: String },
    /// `/rollback` with nothing older to go back to.
    NoEarlierRelease { slug: Slug },
    /// `/teardown` without an environment.
    NothingToTearDown,
    /// `/extend` without a preview.
    NoPreviewToExtend,
}

/// One command's refusal, addressed to `by`.
pub fn refusal(by: &str, r: &Refusal) -> String {
    format!("@{by}: {}", refusal_reason(r))
}

/// Why a command or a dashboard action was refused, not addressed to anyone (the dashboard
/// shows it on the page).
pub fn refusal_reason(r: &Refusal) -> String {
    match r {
        Refusal::Unreadable(err) => command_error(err),
        Refusal::Permission {
            command,
            needed,
            have,
        } => format!(
            "{} needs **{needed}** permission on this repository; you have **{have}**. That command was not run.",
            markdown::code(command)
        ),
        Refusal::PrUnavailable => "could not read this pull request from GitHub.".into(),
        Refusal::PrClosed => "this pull request is closed: reopen it to get a preview.".into(),
        Refusal::UnknownProfile { profile, known } if known.is_empty() => format!(
            "unknown profile {}: this repository defines no profiles.",
            markdown::code(profile)
        ),
        Refusal::UnknownProfile { profile, known } => {
            // Names come from the pull request's own config: quoted, never markdown.
            let known: Vec<String> = known.iter().map(|k| markdown::code(k)).collect();
            format!(
                "unknown profile {}: known profiles are {}.",
                markdown::code(profile),
                known.join(", ")
            )
        }
        Refusal::NotACommit {
            prefix,
            head,
            fork_digits,
        } => format!(
            "{} is not a commit of this pull request: `/stage <sha>` takes its head (now `{}`) or an earlier head stagebot saw{}. Nothing was deployed.",
            markdown::code(prefix),
            head.short(),
            match fork_digits {
                Some(n) => format!(
                    " before your comment (a fork's newer commit needs at least {n} digits: `/stage {}`)",
                    head.as_str().get(..*n).unwrap_or(head.as_str())
                ),
                None => String::new(),
            }
        ),
        Refusal::AmbiguousCommit { prefix } => format!(
            "{} names more than one commit of this pull request: give more digits. Nothing was deployed.",
            markdown::code(prefix)
        ),
        Refusal::ForkHeadUnknown { head, profile } => format!(
            "stagebot has no record of this fork's head from before your comment, so it cannot tell which commit you reviewed. Nothing was deployed. To deploy the head `{}` once you have reviewed it, comment {}.",
            head.short(),
            stage_suggestion(profile.as_deref(), head)
        ),
        Refusal::ForkHeadMoved {
            head,
            seen,
            profile,
        } => format!(
            "the head of this fork moved to `{}` after your comment (the head when you wrote it was `{}`). Nothing was deployed. To deploy the new head once you have reviewed it, comment {}.",
            head.short(),
            seen.short(),
            stage_suggestion(profile.as_deref(), head)
        ),
        Refusal::ClosedUnmerged => {
            "this pull request was closed without being merged: there is nothing to promote."
                .into()
        }
        Refusal::MergeUnknown => "stagebot did not record this pull request's merge commit, so it cannot tell which staging release to promote. Nothing was deployed.".into(),
        Refusal::StagingStillDeploying { merge } => format!(
            "staging is still deploying this pull request's merge commit `{}`: promote it once it is live. Nothing was deployed.",
            merge.short()
        ),
        Refusal::StagingRunsAnother {
            sha,
            release,
            merge,
        } => format!(
            "staging runs `{}` (release #{release}), not this pull request's merge commit `{}`, so it cannot be promoted from here. Nothing was deployed. An operator can promote a given staging release with `stagebot promote`.",
            sha.short(),
            merge.short()
        ),
        Refusal::StagingNotLive { merge } => format!(
            "staging has no live release, so this pull request's merge commit `{}` cannot be promoted from it. Nothing was deployed.",
            merge.short()
        ),
        Refusal::NoPreviewToPromote => {
            "this pull request has no live preview to promote: comment `/stage` first.".into()
        }
        Refusal::LiveReleaseUnknown => "the preview's live release is not recorded.".into(),
        Refusal::NoEnvironmentToRollBack { slug } => {
            format!("there is no `{slug}` environment to roll back.")
        }
        Refusal::NoSuchRelease { slug, release } => format!("`{slug}` has no release #{release}."),
        Refusal::NoReleaseOfCommit { slug, prefix } => format!(
            "`{slug}` has no release of commit {}.",
            markdown::code(prefix)
        ),
        Refusal::NoEarlierRelease { slug } => {
            format!("`{slug}` has no earlier release to roll back to.")
        }
        Refusal::NothingToTearDown => "this pull request has no environment to tear down.".into(),
        Refusal::NoPreviewToExtend => "this pull request has no preview to extend.".into(),
    }
}

/// What is wrong with a command line, and the corrected command if there is one.
pub fn command_error(e: &CommandError) -> String {
    let mut text = command_problem(&e.problem, e.suggestion.is_some());
    if let Some(s) = &e.suggestion {
        text.push_str(&format!(" Did you mean {}?", markdown::code(s)));
    }
    text
}

/// What is wrong with a command line, as a sentence (`suggested`: a correction follows).
pub fn command_problem(p: &Problem, suggested: bool) -> String {
    match p {
        Problem::NearMiss { word } => {
            format!("{} is not a command.", markdown::code(&format!("/{word}")))
        }
        Problem::Unknown { word } => format!(
            "{} is not a stagebot command.{}",
            markdown::code(&format!("/{word}")),
            // Without a suggestion, where to look.
            if suggested {
                ""
            } else {
                " Comment `/help` for the list of commands."
            }
        ),
        Problem::Arguments { usage, problem } => {
            format!("{} Usage: `{usage}`.", arg_problem(problem))
        }
    }
}

fn arg_problem(p: &ArgProblem) -> String {
    match p {
        ArgProblem::NoArguments { name } => format!("`/{name}` takes no arguments."),
        ArgProblem::StageTooMany => "`/stage` takes at most a profile name and a commit sha.".into(),
        ArgProblem::StageTwoShas => "`/stage` takes one commit sha.".into(),
        ArgProblem::StageTwoProfiles => "`/stage` takes one profile name.".into(),
        ArgProblem::NotAProfile { word } => format!(
            "{} is not a profile name (up to 32 of `a-z`, `0-9`, `-`, `_`) nor a commit sha (7 to 40 hex digits).",
            markdown::code(word)
        ),
        ArgProblem::PromoteWhere { word } => format!(
            "`/promote` goes to `staging` or `production`, not {}.",
            markdown::code(word)
        ),
        ArgProblem::PromoteTooMany => "`/promote` takes at most one argument: `staging` or `production` (and `--skip-checks`).".into(),
        ArgProblem::ExtendNeedsDuration => "`/extend` needs a duration, e.g. `/extend 2d` or `/extend 12h` (units: m, h, d, w).".into(),
        ArgProblem::NotADuration { text } => format!(
            "{} is not a duration: write a number and a unit (m, h, d or w), e.g. `/extend 2d` or `/extend 1d 12h`, up to 100 years.",
            markdown::code(text)
        ),
        ArgProblem::NotAnEnvironment { word } => format!(
            "{} is not an environment (`preview`, `staging` or `production`).",
            markdown::code(word)
        ),
        ArgProblem::RollbackTooMany => {
            "`/rollback` takes an environment, then a release number or a commit sha.".into()
        }
        ArgProblem::ReleaseZero => "Release numbers start at 1.".into(),
        ArgProblem::NotAReleaseNumber { word } => {
            format!("{} is not a release number.", markdown::code(word))
        }
        ArgProblem::NotReleaseNorSha { word } => format!(
            "{} is neither a release number nor a commit sha (4 to 40 hex digits).",
            markdown::code(word)
        ),
        ArgProblem::NotImplemented { name } => format!("`/{name}` is not implemented."),
    }
}

/// `/stage [<profile>] <sha>` as a code span.
fn stage_suggestion(profile: Option<&str>, sha: &Sha) -> String {
    match profile {
        Some(p) => markdown::code(&format!("/stage {p} {sha}")),
        None => markdown::code(&format!("/stage {sha}")),
    }
}

/// `/extend` asked for more than the cap: what the expiry is now.
pub fn extend_capped(by: &str, max_extend: Duration, until: DateTime<Utc>) -> String {
    format!(
        "@{by}: previews can be extended at most {} from now; the expiry is now {}.",
        crate::command::format_duration(max_extend),
        until.format("%Y-%m-%d %H:%M UTC")
    )
}

/// The one reply to a comment: every command's answer in order, the note about commands not
/// run, and the command list once if any command asked for it; kept under GitHub's limit.
/// `None` when nothing answers.
pub fn comment_reply(
    login: &str,
    runs: &[CommandRun],
    total: usize,
    not_run: usize,
) -> Option<String> {
    let mut parts: Vec<String> = runs.iter().filter_map(|r| r.reply.clone()).collect();
    if not_run > 0 {
        parts.push(format!(
            "@{login}: this comment has {total} commands; stagebot runs at most {MAX_COMMANDS_PER_COMMENT} per comment, so the last {not_run} were not run. Put them in a new comment."
        ));
    }
    if runs.iter().any(|r| r.help) {
        parts.push(help());
    }
    if parts.is_empty() {
        return None;
    }
    let budget = GITHUB_COMMENT_LIMIT - REPLY_RESERVE;
    let mut body = String::new();
    let mut shown = 0;
    for part in &parts {
        let sep = if body.is_empty() { 0 } else { 2 };
        if body.len() + sep + part.len() > budget {
            break;
        }
        if sep > 0 {
            body.push_str("\n\n");
        }
        body.push_str(part);
        shown += 1;
    }
    if shown < parts.len() {
        if shown == 0 {
            // One answer alone is too long: keep its beginning (at a character boundary).
            let mut cut = budget;
            while !parts[0].is_char_boundary(cut) {
                cut -= 1;
            }
            body.push_str(&parts[0][..cut]);
        }
        body.push_str(&format!(
            "\n\n_This reply was cut to stay under GitHub's limit of {GITHUB_COMMENT_LIMIT} characters per comment._"
        ));
    }
    Some(body)
}

/// `/status`: the PR's environments (and the shared ones) with their release history.
pub fn status(pr: PrNumber, state: &State) -> String {
    let mut out = String::from("### stagebot status\n");
    let relevant: Vec<&EnvRecord> = state
        .envs
        .iter()
        .filter(|e| e.pr == Some(pr) || e.kind != EnvKind::Preview)
        .collect();
    if relevant.is_empty() {
        out.push_str(
            "\nNo environments for this pull request yet. Comment `/stage` to create one.\n",
        );
        return out;
    }
    for env in relevant {
        out.push_str(&format!(
            "\n**{} `{}`** — {}{}\n",
            env.kind,
            env.id.slug,
            env.state().as_str(),
            if env.state() == EnvState::Live {
                format!(" at {}", env.url)
            } else {
                String::new()
            }
        ));
        let releases: &[Release] = state
            .releases
            .iter()
            .find(|(slug, _)| *slug == env.id.slug)
            .map_or(&[], |(_, rs)| rs.as_slice());
        if releases.is_empty() {
            out.push_str("\n_no releases yet_\n");
            continue;
        }
        out.push_str("\n| Release | Commit | By | Trigger | At |\n|---|---|---|---|---|\n");
        for r in releases.iter().rev().take(10) {
            out.push_str(&format!(
                "| #{}{} | `{}` | @{} | {} | {} |\n",
                r.n,
                if env.current_release() == Some(r.n) {
                    " (live)"
                } else {
                    ""
                },
                r.sha.short(),
                r.by,
                trigger(&r.trigger),
                r.at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
    }
    out
}

/// What made a release, in `/status` and on the dashboard.
pub fn trigger(t: &Trigger) -> String {
    match t {
        Trigger::PullRequest => "pull request".into(),
        Trigger::Push => "push".into(),
        Trigger::Stage => "/stage".into(),
        Trigger::Promote {
            from,
            release: Some(n),
        } => format!("/promote from {from} #{n}"),
        Trigger::Promote {
            from,
            release: None,
        } => format!("/promote from {from}"),
        Trigger::Rollback { to_release } => format!("/rollback to #{to_release}"),
        Trigger::Merge => "merge".into(),
        Trigger::Redeploy { release } => format!("redeploy of #{release}"),
        Trigger::Dashboard { then } => {
            format!("{} (dashboard)", trigger(then).trim_start_matches('/'))
        }
    }
}

/// The markdown command list, for `/help`, replies to unreadable commands, and the sticky
/// comment.
pub fn help() -> String {
    let mut out = String::from(
        "**stagebot commands** — one per line, at the start of a line of your comment:\n\n",
    );
    for (_, usage, description, examples) in crate::command::COMMANDS {
        let examples: Vec<String> = examples.iter().map(|e| format!("`{e}`")).collect();
        out.push_str(&format!(
            "- `{usage}`: {description}. Example: {}\n",
            examples.join(", ")
        ));
    }
    out.push_str(
        "\nCommands inside code blocks, inline code and quotes (`>`) are ignored. Durations are \
         a number and a unit, combinable: `90m`, `12h`, `2d`, `1w`, `1d 12h`.\n",
    );
    out
}

// ---------------------------------------------------------------------------------------------
// The CI gate (shown in the sticky comment, on the deployment, and recorded on the release)

/// Where a deploy's CI gate stands, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiText<'a> {
    /// Required checks failed (their names).
    Failed(&'a [&'a str]),
    /// Nothing reported yet.
    NothingReported,
    /// Every considered check passed (their names).
    Passed(&'a [&'a str]),
    /// Some passed, others pending or not reported yet.
    Waiting {
        passed: usize,
        total: usize,
        pending: &'a [&'a str],
        missing: &'a [&'a str],
    },
    /// The results could not be read (`forbidden`: the app lacks `checks: read`).
    Unreadable { forbidden: bool },
    /// `--skip-checks` by this login.
    Skipped { by: &'a str },
    /// A promotion to an environment kind without `require_checks`.
    NoGate { kind: EnvKind },
}

/// The CI gate's text. Check names (anyone with a CI integration picks them) are code spans.
pub fn ci(t: &CiText<'_>) -> String {
    let shown = |list: &[&str]| {
        list.iter()
            .map(|n| markdown::code(n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match t {
        CiText::Failed(names) => format!(
            "CI failed: {} (required by `require_checks`); nothing was deployed",
            shown(names)
        ),
        CiText::NothingReported => "waiting for CI: no check or status reported yet".into(),
        CiText::Passed(names) => format!("CI passed: {}", shown(names)),
        CiText::Waiting {
            passed,
            total,
            pending,
            missing,
        } => {
            let mut text = format!("waiting for CI: {passed} of {total} checks passed");
            if !pending.is_empty() {
                text.push_str(&format!("; pending: {}", shown(pending)));
            }
            if !missing.is_empty() {
                text.push_str(&format!("; not reported yet: {}", shown(missing)));
            }
            text
        }
        CiText::Unreadable { forbidden: true } => "the CI gate cannot be evaluated: the GitHub App lacks the `checks: read` permission on this repository (accept the new permission in the installation's settings); the deploy waits".into(),
        CiText::Unreadable { forbidden: false } => "waiting for CI: the checks could not be read from GitHub; they are read again on the next check event".into(),
        CiText::Skipped { by } => format!("CI checks skipped by @{by} (`--skip-checks`)"),
        CiText::NoGate { kind } => format!("no CI gate (`{kind}.require_checks` is not set)"),
    }
}

// ---------------------------------------------------------------------------------------------
// Commit statuses and deployments (plain text; GitHub cuts descriptions to 140 characters)

/// What a commit status (`stagebot/<kind>`) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitStatus<'a> {
    /// Waiting for the CI gate (its text, if known).
    Waiting {
        ci: Option<&'a str>,
    },
    Deploying,
    Live {
        url: &'a str,
    },
    /// The deploy failed (the error, if recorded).
    Failed {
        error: Option<&'a str>,
    },
}

/// A commit status's description.
pub fn commit_status(s: CommitStatus<'_>) -> String {
    match s {
        CommitStatus::Waiting { ci } => ci.unwrap_or("Waiting for CI").to_owned(),
        CommitStatus::Deploying => "Deploying…".into(),
        CommitStatus::Live { url } => format!("Live at {url}"),
        CommitStatus::Failed { error } => error.unwrap_or("Deploy failed").to_owned(),
    }
}

/// What a deployment status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentStatus<'a> {
    /// Queued behind the CI gate (its text).
    Waiting {
        ci: &'a str,
    },
    Deploying {
        sha: &'a Sha,
    },
    Live {
        url: &'a str,
    },
    Failed {
        error: Option<&'a str>,
    },
    /// An unfinished attempt cut short by a newer deploy of `sha`.
    Superseded {
        sha: &'a Sha,
    },
    /// An older release made inactive by release `release`.
    Replaced {
        release: u32,
    },
    /// The environment was torn down.
    Removed,
}

/// A deployment status's description.
pub fn deployment_status(s: DeploymentStatus<'_>) -> String {
    match s {
        DeploymentStatus::Waiting { ci } => ci.to_owned(),
        DeploymentStatus::Deploying { sha } => format!("Deploying {}", sha.short()),
        DeploymentStatus::Live { url } => format!("Live at {url}"),
        DeploymentStatus::Failed { error } => error.unwrap_or("Deploy failed").to_owned(),
        DeploymentStatus::Superseded { sha } => {
            format!("Superseded by a newer deploy ({})", sha.short())
        }
        DeploymentStatus::Replaced { release } => format!("Replaced by release #{release}"),
        DeploymentStatus::Removed => "Environment removed".into(),
    }
}

/// A GitHub Deployment's description.
pub fn deployment(kind: EnvKind, slug: &Slug, release: u32) -> String {
    format!("stagebot {kind} {slug} release #{release}")
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;
