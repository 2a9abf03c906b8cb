//! Golden files of every message (`fixtures/messages/`): a reviewer reads the exact texts
//! there. [`goldens`] lists every file with the function that writes it; one test compares
//! them (`STAGEBOT_BLESS=1 cargo test --lib messages` rewrites them after an intended change),
//! another fails on a file in that folder no entry produces (a stale golden file).

use chrono::{DateTime, Utc};

use super::*;
use crate::environment::{Op, Trigger};
use crate::types::RepoName;

/// Every golden file and its text.
fn goldens() -> Vec<(&'static str, String)> {
    vec![
        ("sticky-waiting-for-ci.md", sticky_waiting_for_ci()),
        ("sticky-live.md", sticky_live_with_staging()),
        ("sticky-states.md", sticky_failed_deploying_queued_removed()),
        (
            "sticky-merged.md",
            sticky_after_merge_lists_the_production_release(),
        ),
        ("sticky-hostile-error.md", sticky_error_text_is_inert()),
        ("sticky-sentry.md", sticky_error_streams()),
        ("sticky-notices.md", sticky_notices()),
        ("status.md", status_replies()),
        ("help.md", help()),
        ("refusals.md", refusals()),
        ("command-errors.md", command_errors()),
        ("comment-reply.md", comment_replies_assembled()),
        // Replies as the policy composes them for whole comments (src/policy_tests.rs).
        (
            "comment-replies.md",
            crate::policy::tests::comment_replies(),
        ),
        ("expiry-warning.md", expiry_warnings()),
        ("ci-gate.md", ci_texts()),
        ("github-descriptions.md", github_descriptions()),
        ("sticky-dashboard.md", sticky_dashboard_notices()),
    ]
}

fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/messages")
}

#[test]
fn every_message_matches_its_golden_file() {
    let bless = std::env::var_os("STAGEBOT_BLESS").is_some();
    let mut wrong = Vec::new();
    for (name, text) in goldens() {
        let path = golden_dir().join(name);
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == text => {}
            Ok(expected) => {
                let line = expected
                    .lines()
                    .zip(text.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(expected.lines().count().min(text.lines().count()));
                wrong.push(format!("{name}: differs from line {}", line + 1));
            }
            Err(e) => wrong.push(format!("{name}: {e} (missing?)")),
        }
    }
    assert!(
        wrong.is_empty(),
        "golden files differ (run with STAGEBOT_BLESS=1 if the change is intended):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_golden_file_is_stale() {
    let produced: Vec<&str> = goldens().into_iter().map(|(name, _)| name).collect();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !produced.contains(&name.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "golden files no test produces (delete them, or add them to `goldens`): {stale:?}"
    );
    let mut unique = produced.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), produced.len(), "a golden file listed twice");
}

/// Hostile values a stranger controls, used where they can appear.
const HOSTILE: &[&str] = &[
    "<img src=x onerror=alert(1)>",
    "@everyone",
    "a`b``c",
    "[click](https://evil.example)",
    "line\nbreak # heading",
];

// ---------------------------------------------------------------------------------------------
// Builders

fn at(h: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap_or_default()
}

fn sha(c: char) -> Sha {
    Sha::new(&c.to_string().repeat(40)).unwrap()
}

fn env(slug: &str, kind: EnvKind, state: EnvState) -> EnvRecord {
    let repo: RepoName = "acme/webapp".parse().unwrap();
    let id = crate::types::EnvId {
        repo,
        slug: Slug::new(slug).unwrap(),
    };
    let mut rec = EnvRecord::new(id, kind, "feature/login", at(0)).with_state(state);
    rec.pr = Some(PrNumber(42));
    rec.installation_id = Some(1);
    rec.host = format!("{slug}--webapp.previews.example.com");
    rec.url = format!("https://{slug}--webapp.previews.example.com");
    rec.set_generation(3);
    rec.set_current_release(Some(2));
    rec.set_releases(2);
    rec.updated_at = at(1);
    rec.last_activity = at(1);
    rec.set_expires_at(Some(at(1 + 72)));
    rec.ttl_secs = Some(3 * 86_400);
    rec.set_seeded(true);
    rec
}

fn release(n: u32, c: char) -> Release {
    Release {
        v: 1,
        n,
        sha: sha(c),
        git_ref: "feature/login".into(),
        by: "alice".into(),
        trigger: Trigger::Push,
        at: at(1),
        url: String::new(),
        log: String::new(),
        pr: Some(PrNumber(42)),
        checks: None,
        artifact: None,
    }
}

fn sticky_waiting_for_ci() -> String {
    let mut prod = env("production", EnvKind::Production, EnvState::Live);
    prod.set_expires_at(None);
    prod.set_current_release(Some(1));
    prod.set_attempted(Some(sha('c')));
    prod.set_op(Some(Op::Deploy {
        sha: sha('c'),
        git_ref: "main".into(),
        trigger: Trigger::Promote {
            from: Slug::staging(),
            release: Some(2),
        },
        by: "maria".into(),
        ack: None,
        force: false,
        gate: Some(crate::repo_config::CiGate::All),
        checks: None,
    }));
    prod.set_ci_wait(Some(
        "waiting for CI: 2 of 3 checks passed; pending: `test`".into(),
    ));
    let rows = vec![(prod, Some(release(1, 'b')), None)];
    sticky(&PrRecord::default(), &rows, at(2), &[])
}

fn sticky_live_with_staging() -> String {
    let preview = env("pr-42-feature-login", EnvKind::Preview, EnvState::Live);
    let mut staging = env("staging", EnvKind::Staging, EnvState::Live);
    staging.set_expires_at(None);
    staging.set_current_release(Some(1));
    let rows = vec![
        (preview, Some(release(2, 'b')), None),
        (staging, Some(release(1, 'b')), None),
    ];
    sticky(&PrRecord::default(), &rows, at(2), &[])
}

fn sticky_failed_deploying_queued_removed() -> String {
    let mut failed = env("pr-42-feature-login", EnvKind::Preview, EnvState::Failed);
    failed.last_error = Some("`build` exited with status 2".into());
    failed.last_log_tail = Some("npm ERR! missing script: build\n```oops```".into());
    let mut deploying = env("pr-42-feature-login", EnvKind::Preview, EnvState::Deploying);
    deploying.set_deploying(Some(sha('c')));
    deploying.set_op(Some(Op::Teardown {
        reason: String::new(),
        by: String::new(),
        ack: None,
    }));
    let mut queued = env("pr-42-feature-login", EnvKind::Preview, EnvState::Queued);
    queued.set_current_release(None);
    let mut removed = env("pr-42-feature-login", EnvKind::Preview, EnvState::Destroyed);
    removed.set_expires_at(None);
    let mut warned = env("pr-42-feature-login", EnvKind::Preview, EnvState::Live);
    warned.set_warned_at(Some(at(60)));
    let mut out = String::new();
    for (title, rows) in [
        ("failed", vec![(failed, Some(release(2, 'b')), None)]),
        ("deploying", vec![(deploying, Some(release(2, 'b')), None)]),
        ("queued", vec![(queued, None, Some(3))]),
        ("removed", vec![(removed, Some(release(2, 'b')), None)]),
        ("warned", vec![(warned, Some(release(2, 'b')), None)]),
    ] {
        out.push_str(&format!("<!-- {title} -->\n"));
        out.push_str(&sticky(&PrRecord::default(), &rows, at(62), &[]));
    }
    out
}

fn sticky_after_merge_lists_the_production_release() -> String {
    let mut removed = env("pr-42-feature-login", EnvKind::Preview, EnvState::Destroyed);
    removed.set_expires_at(None);
    let mut production = env("production", EnvKind::Production, EnvState::Live);
    production.pr = None;
    production.set_expires_at(None);
    production.set_current_release(Some(7));
    let merged = Release {
        n: 7,
        trigger: Trigger::Merge,
        by: "maria".into(),
        pr: None,
        ..release(7, 'e')
    };
    let pr = PrRecord {
        closed: true,
        merge_sha: Some(sha('e')),
        ..PrRecord::default()
    };
    let rows = vec![
        (removed, Some(release(2, 'b')), None),
        (production, Some(merged), None),
    ];
    sticky(&pr, &rows, at(3), &[])
}

fn sticky_error_text_is_inert() -> String {
    let mut out = String::new();
    for err in [
        ".github/stagebot.yml: unknown key `x` at line 1 — expected `build` <img src=x onerror=alert(1)> @everyone [click](https://evil.example)",
        "git fetch: fatal: ``` \n</details>\n# @maintainers <b>pwned</b>",
    ] {
        let mut failed = env("pr-42-feature-login", EnvKind::Preview, EnvState::Failed);
        failed.last_error = Some(err.into());
        failed.last_log_tail = Some("<script>alert(1)</script>\n````".into());
        out.push_str(&sticky(
            &PrRecord::default(),
            &[(failed, Some(release(2, 'b')), None)],
            at(62),
            &[],
        ));
    }
    out
}

fn sticky_error_streams() -> String {
    let mut live = env("pr-42-feature-login", EnvKind::Preview, EnvState::Live);
    live.set_current_release(Some(2));
    let mut staging = env("staging", EnvKind::Staging, EnvState::Live);
    staging.set_current_release(Some(1));
    let rows = vec![
        (live, Some(release(2, 'b')), None),
        (staging, Some(release(1, 'b')), None),
    ];
    let link = |env: &str| {
        format!(
            "https://sentry.io/organizations/acme/issues/?environment={env}&query=release%3A{}",
            "b".repeat(40)
        )
    };
    let mut out = String::new();
    for counts in [[Some(3), Some(0)], [Some(1), None], [Some(100), Some(0)]] {
        let errors = vec![
            ErrorStream {
                slug: Slug::new("pr-42-feature-login").unwrap(),
                sha: sha('b'),
                link: link("preview"),
                new_issues: counts[0],
            },
            ErrorStream {
                slug: Slug::staging(),
                sha: sha('b'),
                link: link("staging"),
                new_issues: counts[1],
            },
        ];
        out.push_str(&sticky(&PrRecord::default(), &rows, at(2), &errors));
        out.push_str("\n---\n\n");
    }
    out
}

fn sticky_notices() -> String {
    let mut out = String::new();
    for n in [
        Notice::Draft,
        Notice::Fork,
        Notice::ForkNeedsApproval { sha: sha('d') },
        Notice::OnDemand,
        Notice::Closed,
    ] {
        let pr = PrRecord {
            notice: Some(notice(&n)),
            ..PrRecord::default()
        };
        out.push_str(&sticky(&pr, &[], at(0), &[]));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Replies

fn section(out: &mut String, title: &str, text: &str) {
    out.push_str(&format!("<!-- {title} -->\n{text}\n\n"));
}

fn policy_state(envs: Vec<EnvRecord>, releases: Vec<(Slug, Vec<Release>)>) -> State {
    State {
        now: at(2),
        envs,
        releases,
        pr_record: None,
        pr_info: None,
        permission: None,
        head_profiles: None,
        previews_in_use: 0,
        limits: crate::policy::Limits::default(),
        received: None,
        open_pr_branches: Vec::new(),
    }
}

fn status_replies() -> String {
    let mut out = String::new();
    section(
        &mut out,
        "no environment yet",
        &status(PrNumber(42), &policy_state(Vec::new(), Vec::new())),
    );
    let preview = env("pr-42-feature-login", EnvKind::Preview, EnvState::Live);
    let other = env("pr-43-other", EnvKind::Preview, EnvState::Live);
    let mut other = other;
    other.pr = Some(PrNumber(43));
    let mut staging = env("staging", EnvKind::Staging, EnvState::Live);
    staging.set_current_release(Some(2));
    let mut production = env("production", EnvKind::Production, EnvState::Failed);
    production.set_current_release(None);
    let preview_releases = vec![
        Release {
            trigger: Trigger::PullRequest,
            ..release(1, 'a')
        },
        Release {
            trigger: Trigger::Stage,
            by: "maria".into(),
            ..release(2, 'b')
        },
        Release {
            trigger: Trigger::Rollback { to_release: 1 },
            ..release(3, 'a')
        },
    ];
    let mut preview = preview;
    preview.set_current_release(Some(3));
    let staging_releases = vec![
        Release {
            trigger: Trigger::Merge,
            ..release(1, 'c')
        },
        Release {
            trigger: Trigger::Promote {
                from: Slug::new("pr-42-feature-login").unwrap(),
                release: Some(2),
            },
            ..release(2, 'b')
        },
        Release {
            trigger: Trigger::Promote {
                from: Slug::new("pr-42-feature-login").unwrap(),
                release: None,
            },
            ..release(3, 'b')
        },
    ];
    let st = policy_state(
        vec![preview, other, staging, production],
        vec![
            (Slug::new("pr-42-feature-login").unwrap(), preview_releases),
            (Slug::staging(), staging_releases),
        ],
    );
    section(
        &mut out,
        "a preview with three releases, staging, production without one; another PR's preview left out",
        &status(PrNumber(42), &st),
    );
    out
}

fn refusals() -> String {
    let unreadable = |body: &str| match crate::command::parse_commands(body).into_iter().next() {
        Some(Err(e)) => e,
        other => panic!("{body}: {other:?}"),
    };
    let mut cases: Vec<(&str, Refusal)> = vec![
        ("a typo", Refusal::Unreadable(unreadable("/stgae"))),
        (
            "hostile arguments",
            Refusal::Unreadable(unreadable(
                "/promote <img src=x onerror=alert(1)> @everyone",
            )),
        ),
        (
            "permission",
            Refusal::Permission {
                command: "/promote production".into(),
                needed: Permission::Maintain,
                have: Permission::Write,
            },
        ),
        ("pull request unavailable", Refusal::PrUnavailable),
        ("pull request closed", Refusal::PrClosed),
        (
            "unknown profile, none defined",
            Refusal::UnknownProfile {
                profile: "lite".into(),
                known: Vec::new(),
            },
        ),
        (
            "unknown profile, hostile names defined",
            Refusal::UnknownProfile {
                profile: "lite".into(),
                known: HOSTILE.iter().map(|s| (*s).to_owned()).collect(),
            },
        ),
        (
            "not a commit of a branch",
            Refusal::NotACommit {
                prefix: "eee0005".into(),
                head: sha('b'),
                fork_digits: None,
            },
        ),
        (
            "not a commit of a fork, short prefix",
            Refusal::NotACommit {
                prefix: "eee0005".into(),
                head: sha('b'),
                fork_digits: Some(crate::policy::FORK_LATE_SHA_DIGITS),
            },
        ),
        (
            "ambiguous commit",
            Refusal::AmbiguousCommit {
                prefix: "abc1234".into(),
            },
        ),
        (
            "fork head unknown",
            Refusal::ForkHeadUnknown {
                head: sha('c'),
                profile: None,
            },
        ),
        (
            "fork head moved, with a profile",
            Refusal::ForkHeadMoved {
                head: sha('c'),
                seen: sha('b'),
                profile: Some("lite".into()),
            },
        ),
        ("closed without a merge", Refusal::ClosedUnmerged),
        ("merge commit unknown", Refusal::MergeUnknown),
        (
            "staging still deploying the merge",
            Refusal::StagingStillDeploying { merge: sha('e') },
        ),
        (
            "staging runs another commit",
            Refusal::StagingRunsAnother {
                sha: sha('f'),
                release: 2,
                merge: sha('e'),
            },
        ),
        (
            "staging not live",
            Refusal::StagingNotLive { merge: sha('e') },
        ),
        ("no preview to promote", Refusal::NoPreviewToPromote),
        ("live release unknown", Refusal::LiveReleaseUnknown),
        (
            "no environment to roll back",
            Refusal::NoEnvironmentToRollBack {
                slug: Slug::production(),
            },
        ),
        (
            "no such release",
            Refusal::NoSuchRelease {
                slug: Slug::staging(),
                release: 9,
            },
        ),
        (
            "no release of a commit",
            Refusal::NoReleaseOfCommit {
                slug: Slug::staging(),
                prefix: "abc1234".into(),
            },
        ),
        (
            "no earlier release",
            Refusal::NoEarlierRelease {
                slug: Slug::new("pr-42-feature-login").unwrap(),
            },
        ),
        ("nothing to tear down", Refusal::NothingToTearDown),
        ("no preview to extend", Refusal::NoPreviewToExtend),
    ];
    for hostile in HOSTILE {
        cases.push((
            "hostile profile name asked for",
            Refusal::UnknownProfile {
                profile: (*hostile).to_owned(),
                known: vec!["lite".into()],
            },
        ));
    }
    let mut out = String::new();
    for (title, r) in &cases {
        section(&mut out, title, &refusal("alice", r));
    }
    out
}

fn command_errors() -> String {
    let lines = [
        "/stage.",
        "/stgae",
        "/lgtm",
        "/stage <img>",
        "/teardown now",
        "/stage a b c",
        "/stage abc1234 def5678",
        "/stage lite full",
        "/stage a`@everyone`",
        "/promote prodution",
        "/promote [click](https://evil.example)",
        "/promote staging production",
        "/extend",
        "/extend forever",
        "/rollback prodution 3",
        "/rollback prodution `x`",
        "/rollback 3 production",
        "/rollback production 3 4",
        "/rollback #0",
        "/rollback #99999999999",
        "/rollback production xyz",
    ];
    let mut out = String::new();
    for line in lines {
        let text = match crate::command::parse_commands(line).into_iter().next() {
            Some(Err(e)) => command_error(&e),
            other => format!("(not an error: {other:?})"),
        };
        section(&mut out, &line.replace("--", "- -"), &text);
    }
    out
}

fn comment_replies_assembled() -> String {
    use crate::store::CommandOutcome as Ran;
    let run = |outcome, reply: Option<&str>, help| CommandRun {
        outcome,
        reply: reply.map(str::to_owned),
        help,
    };
    let mut out = String::new();
    section(
        &mut out,
        "a refusal with the command list",
        &comment_reply(
            "alice",
            &[run(
                Ran::Refused,
                Some("@alice: `/stgae` is not a command."),
                true,
            )],
            1,
            0,
        )
        .unwrap_or_default(),
    );
    section(
        &mut out,
        "two answers and a note about commands not run",
        &comment_reply(
            "alice",
            &[
                run(Ran::Done, Some("### stagebot status\n\n(…)"), false),
                run(Ran::Deferred, None, false),
                run(
                    Ran::Refused,
                    Some("@alice: this pull request has no preview to extend."),
                    false,
                ),
            ],
            12,
            2,
        )
        .unwrap_or_default(),
    );
    section(
        &mut out,
        "nothing to answer",
        comment_reply("alice", &[run(Ran::Deferred, None, false)], 1, 0)
            .as_deref()
            .unwrap_or("(no reply)"),
    );
    section(
        &mut out,
        "/extend past the cap",
        &extend_capped("alice", Duration::from_secs(14 * 86_400), at(14 * 24)),
    );
    out
}

fn expiry_warnings() -> String {
    let mut out = String::new();
    section(
        &mut out,
        "a preview idle for most of its time",
        &expiry_warning(&Slug::new("pr-42-feature-login").unwrap(), at(72)),
    );
    out
}

fn ci_texts() -> String {
    let names: Vec<&str> = vec!["build", "test"];
    let hostile: Vec<&str> = HOSTILE.to_vec();
    let cases: Vec<(&str, CiText<'_>)> = vec![
        ("failed", CiText::Failed(&names)),
        ("failed, hostile check names", CiText::Failed(&hostile)),
        ("nothing reported", CiText::NothingReported),
        ("passed", CiText::Passed(&names)),
        (
            "waiting",
            CiText::Waiting {
                passed: 1,
                total: 4,
                pending: &names[..1],
                missing: &hostile[..2],
            },
        ),
        (
            "waiting, nothing missing",
            CiText::Waiting {
                passed: 2,
                total: 3,
                pending: &names[1..],
                missing: &[],
            },
        ),
        (
            "unreadable: no permission",
            CiText::Unreadable { forbidden: true },
        ),
        (
            "unreadable: GitHub failed",
            CiText::Unreadable { forbidden: false },
        ),
        ("skipped", CiText::Skipped { by: "root" }),
        (
            "no gate",
            CiText::NoGate {
                kind: EnvKind::Production,
            },
        ),
    ];
    let mut out = String::new();
    for (title, t) in &cases {
        section(&mut out, title, &ci(t));
    }
    out
}

fn github_descriptions() -> String {
    let url = "https://pr-42-feature-login--webapp.previews.example.com";
    let error = "`build` exited with status 2";
    let mut out = String::new();
    for (title, s) in [
        ("commit status: waiting", CommitStatus::Waiting { ci: None }),
        (
            "commit status: waiting for checks",
            CommitStatus::Waiting {
                ci: Some("waiting for CI: 1 of 2 checks passed; pending: `test`"),
            },
        ),
        ("commit status: deploying", CommitStatus::Deploying),
        ("commit status: live", CommitStatus::Live { url }),
        (
            "commit status: failed",
            CommitStatus::Failed { error: Some(error) },
        ),
        (
            "commit status: failed, no error",
            CommitStatus::Failed { error: None },
        ),
    ] {
        section(&mut out, title, &commit_status(s));
    }
    let sha = sha('b');
    for (title, s) in [
        (
            "deployment status: waiting",
            DeploymentStatus::Waiting {
                ci: "waiting for CI: no check or status reported yet",
            },
        ),
        (
            "deployment status: deploying",
            DeploymentStatus::Deploying { sha: &sha },
        ),
        ("deployment status: live", DeploymentStatus::Live { url }),
        (
            "deployment status: failed",
            DeploymentStatus::Failed { error: Some(error) },
        ),
        (
            "deployment status: failed, no error",
            DeploymentStatus::Failed { error: None },
        ),
        (
            "deployment status: superseded",
            DeploymentStatus::Superseded { sha: &sha },
        ),
        (
            "deployment status: replaced",
            DeploymentStatus::Replaced { release: 4 },
        ),
        ("deployment status: removed", DeploymentStatus::Removed),
    ] {
        section(&mut out, title, &deployment_status(s));
    }
    for (kind, slug, n) in [
        (EnvKind::Preview, "pr-42-feature-login", 3),
        (EnvKind::Staging, "staging", 1),
        (EnvKind::Production, "production", 12),
    ] {
        section(
            &mut out,
            &format!("deployment: {kind}"),
            &deployment(kind, &Slug::new(slug).unwrap(), n),
        );
    }
    out
}

/// The sticky comment after each action on the dashboard.
fn sticky_dashboard_notices() -> String {
    use crate::policy::DashboardAction as A;
    let mut out = String::new();
    for (action, env, release) in [
        (
            A::Promote {
                to: crate::command::PromoteTarget::Production,
            },
            "pr-42-login",
            Some((3, sha('a'))),
        ),
        (A::Rollback { to: 1 }, "production", Some((1, sha('b')))),
        (A::Redeploy, "staging", Some((4, sha('c')))),
        (
            A::Extend {
                by: Duration::from_secs(3 * 24 * 3600),
            },
            "pr-42-login",
            None,
        ),
        (A::Teardown, "pr-42-login", None),
    ] {
        let n = crate::policy::Notice::Dashboard {
            actor: "ada".into(),
            action,
            slug: Slug::new(env).unwrap(),
            release,
        };
        let pr = PrRecord {
            notice: Some(notice(&n)),
            ..PrRecord::default()
        };
        out.push_str(&sticky(&pr, &[], at(0), &[]));
    }
    out
}
