//! The policy's decision table.

use std::collections::BTreeMap;

use chrono::TimeZone;

use super::*;
use crate::event::{Actor, PullRequest, RepoInfo};
use crate::repo_config::{self, Profile};
use crate::types::{EnvId, RepoName};

// ---------------------------------------------------------------------------------------------
// Builders

const PR: u64 = 42;
const BRANCH: &str = "feature/login";
const COMMENT_ID: u64 = 777;
const DAY: i64 = 24 * 3600;
const HOUR: i64 = 3600;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 10, 12, 0, 0).unwrap()
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

/// A 40-digit sha starting with `prefix`.
fn sha(prefix: &str) -> Sha {
    Sha::new(&format!("{prefix:0<40}")).unwrap()
}

fn slug(s: &str) -> Slug {
    Slug::new(s).unwrap()
}

fn pr_slug() -> Slug {
    preview_slug(Some(PrNumber(PR)), BRANCH)
}

fn repo() -> RepoName {
    RepoName::new("octo", "webapp").unwrap()
}

fn repo_info() -> RepoInfo {
    RepoInfo {
        name: repo(),
        default_branch: "main".into(),
        clone_url: "https://github.com/octo/webapp.git".into(),
        private: false,
    }
}

fn actor(login: &str) -> Actor {
    Actor {
        login: login.into(),
        is_bot: login.ends_with("[bot]"),
    }
}

fn env(slug_: &str, kind: EnvKind, state: EnvState) -> EnvRecord {
    let id = EnvId {
        repo: repo(),
        slug: slug(slug_),
    };
    let mut e = EnvRecord::new(id, kind, "main", now() - secs(DAY)).with_state(state);
    e.installation_id = Some(1);
    e.clone_url = "https://github.com/octo/webapp.git".into();
    e.host = format!("{slug_}--webapp");
    e.url = format!("http://{slug_}--webapp.localhost:3000");
    e.set_generation(1);
    e
}

/// The preview of PR 42 on `feature/login`, idle for a day with a 3-day TTL.
fn pr_preview(state: EnvState) -> EnvRecord {
    let mut e = env(pr_slug().as_str(), EnvKind::Preview, state);
    e.branch = BRANCH.into();
    e.pr = Some(PrNumber(PR));
    e.ttl_secs = Some(3 * DAY as u64);
    e.set_expires_at(Some(now() + secs(2 * DAY)));
    e
}

fn release(n: u32, sha_: &str) -> Release {
    Release {
        v: 1,
        n,
        sha: sha(sha_),
        git_ref: BRANCH.into(),
        by: "alice".into(),
        trigger: Trigger::PullRequest,
        at: now() - secs(DAY) + secs(n as i64 * 60),
        url: "http://x.localhost".into(),
        log: "http://x.localhost/log".into(),
        pr: Some(PrNumber(PR)),
        checks: None,
        artifact: None,
    }
}

/// A live environment with releases `shas` (1-based), the last one live.
fn with_releases(mut e: EnvRecord, shas: &[&str], st: &mut State) -> EnvRecord {
    e.set_releases(shas.len() as u32);
    e.set_current_release(Some(shas.len() as u32));
    e.seen_shas = shas.iter().map(|s| sha(s)).collect();
    st.releases.push((
        e.id.slug.clone(),
        shas.iter()
            .enumerate()
            .map(|(i, s)| release(i as u32 + 1, s))
            .collect(),
    ));
    e
}

fn state() -> State {
    State {
        now: now(),
        envs: Vec::new(),
        releases: Vec::new(),
        pr_record: Some(PrRecord::default()),
        pr_info: None,
        permission: None,
        head_profiles: None,
        previews_in_use: 0,
        limits: Limits::default(),
        received: None,
        open_pr_branches: Vec::new(),
    }
}

fn config() -> RepoConfig {
    RepoConfig::default()
}

fn pull(head: &str) -> PullRequest {
    PullRequest {
        number: PrNumber(PR),
        title: "Login page".into(),
        author: actor("alice"),
        head_ref: BRANCH.into(),
        head_sha: sha(head),
        head_clone_url: "https://github.com/octo/webapp.git".into(),
        base_ref: "main".into(),
        draft: false,
        fork: false,
        merged: false,
        merge_commit_sha: None,
        open: true,
    }
}

fn fork_pull(head: &str) -> PullRequest {
    PullRequest {
        fork: true,
        head_clone_url: "https://github.com/mallory/webapp.git".into(),
        ..pull(head)
    }
}

fn pr_event(action: PrAction, pr: PullRequest) -> Event {
    Event::PullRequest(PullRequestEvent {
        action,
        repo: repo_info(),
        installation_id: Some(1),
        sender: actor("alice"),
        pr,
    })
}

fn sync(before: &str, pr: PullRequest) -> Event {
    pr_event(
        PrAction::Synchronize {
            before: Some(sha(before)),
        },
        pr,
    )
}

fn push_event(branch: &str, before: &str, after: &str) -> PushEvent {
    PushEvent {
        repo: repo_info(),
        installation_id: Some(1),
        branch: branch.into(),
        before: sha(before),
        after: sha(after),
        created: false,
        deleted: false,
        forced: false,
        is_default_branch: branch == "main",
        sender: actor("alice"),
    }
}

fn deleted_push(branch: &str) -> Event {
    Event::Push(PushEvent {
        deleted: true,
        ..push_event(branch, "c0ffee1", "0000000")
    })
}

fn branch_deleted(branch: &str) -> Event {
    Event::BranchDeleted(BranchDeletedEvent {
        repo: repo_info(),
        installation_id: Some(1),
        branch: branch.into(),
        sender: actor("alice"),
    })
}

fn comment_event(body: &str) -> CommentEvent {
    CommentEvent {
        action: CommentAction::Created,
        repo: repo_info(),
        installation_id: Some(1),
        number: PrNumber(PR),
        is_pr: true,
        comment_id: COMMENT_ID,
        body: body.into(),
        author: actor("bob"),
        author_association: "MEMBER".into(),
        sender: actor("bob"),
    }
}

fn comment(body: &str) -> Event {
    Event::Comment(comment_event(body))
}

fn pr_info(head: &str) -> PrInfo {
    PrInfo {
        number: PrNumber(PR),
        open: true,
        merged: false,
        draft: false,
        title: "Login page".into(),
        head_ref: BRANCH.into(),
        head_sha: sha(head),
        base_ref: "main".into(),
        fork: false,
        author: "alice".into(),
        head_clone_url: "https://github.com/octo/webapp.git".into(),
    }
}

/// The state a comment event is decided in: the PR's head is `ddd0001`.
fn comment_state(permission: Permission) -> State {
    State {
        pr_info: Some(pr_info("ddd0001")),
        permission: Some(permission),
        ..state()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading decisions

#[track_caller]
fn acts(d: Decision) -> Vec<Action> {
    match d {
        Decision::Act(a) => a,
        Decision::Ignore(r) => panic!("expected actions, got Ignore({r:?})"),
    }
}

#[track_caller]
fn ignored(d: Decision) -> String {
    match d {
        Decision::Ignore(r) => r,
        Decision::Act(a) => panic!("expected Ignore, got {a:#?}"),
    }
}

fn deploys(actions: &[Action]) -> Vec<&Deploy> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deploy(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[track_caller]
fn one_deploy(actions: &[Action]) -> &Deploy {
    let d = deploys(actions);
    assert_eq!(d.len(), 1, "expected one deploy in {actions:#?}");
    d[0]
}

fn teardowns(actions: &[Action]) -> Vec<(&Slug, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Teardown { slug, reason, .. } => Some((slug, reason.as_str())),
            _ => None,
        })
        .collect()
}

fn reactions(actions: &[Action]) -> Vec<Reaction> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::React {
                comment_id,
                reaction,
            } => {
                assert_eq!(*comment_id, COMMENT_ID);
                Some(*reaction)
            }
            _ => None,
        })
        .collect()
}

/// The combined replies (there is at most one per comment).
fn replies(actions: &[Action]) -> Vec<&str> {
    let r: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::CommentReply { comment, body } => {
                assert_eq!(comment.pr, PrNumber(PR));
                assert_eq!(comment.comment_id, COMMENT_ID);
                Some(body.as_str())
            }
            _ => None,
        })
        .collect();
    assert!(r.len() <= 1, "one reply per comment: {actions:#?}");
    r
}

/// The recorded runs of the comment's commands, by index.
fn runs(actions: &[Action]) -> Vec<(usize, &CommandRun)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CommandRan { index, run, .. } => Some((*index, run)),
            _ => None,
        })
        .collect()
}

fn notices(actions: &[Action]) -> Vec<Option<Notice>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Sticky { notice, .. } => Some(notice.clone()),
            _ => None,
        })
        .collect()
}

/// A command comment that was refused: 👀, a reply, 😕, and no work.
#[track_caller]
fn assert_refused(actions: &[Action], reply_contains: &[&str]) {
    assert_eq!(
        reactions(actions),
        vec![Reaction::Eyes, Reaction::Confused],
        "{actions:#?}"
    );
    let r = replies(actions);
    assert_eq!(r.len(), 1, "{actions:#?}");
    for needle in reply_contains {
        assert!(r[0].contains(needle), "reply {:?} lacks {needle:?}", r[0]);
    }
    assert!(deploys(actions).is_empty(), "{actions:#?}");
    assert!(teardowns(actions).is_empty(), "{actions:#?}");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Extend { .. } | Action::ApproveFork { .. })),
        "{actions:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. PR opened / reopened / ready for review

const OPENING: [PrAction; 3] = [
    PrAction::Opened,
    PrAction::Reopened,
    PrAction::ReadyForReview,
];

#[test]
fn opening_a_same_repo_pr_deploys_its_head() {
    for action in OPENING {
        let a = acts(decide(
            &pr_event(action.clone(), pull("abc0001")),
            &config(),
            &state(),
        ));
        let d = one_deploy(&a);
        assert_eq!(
            *d,
            Deploy {
                target: Target {
                    kind: EnvKind::Preview,
                    slug: pr_slug(),
                    branch: BRANCH.into(),
                    pr: Some(PrNumber(PR)),
                    clone_url: Some("https://github.com/octo/webapp.git".into()),
                    fork: false,
                },
                sha: sha("abc0001"),
                trigger: Trigger::PullRequest,
                by: "alice".into(),
                ack: None,
                force: false,
                profile: None,
                queue: false,
                ttl: Some(Duration::from_secs(3 * DAY as u64)),
                gate: None,
                checks: None,
            },
            "{action:?}"
        );
        assert!(notices(&a).is_empty(), "{action:?}: {a:#?}");
        let reopened = a
            .iter()
            .any(|x| matches!(x, Action::MarkPrClosed { closed: false, .. }));
        assert_eq!(reopened, action == PrAction::Reopened, "{action:?}");
    }
}

#[test]
fn opening_uses_the_configured_ttl() {
    let cfg = repo_config::parse("preview:\n  ttl: 12h\n").unwrap();
    let a = acts(decide(
        &pr_event(PrAction::Opened, pull("abc0001")),
        &cfg,
        &state(),
    ));
    assert_eq!(one_deploy(&a).ttl, Some(Duration::from_secs(12 * 3600)));
}

#[test]
fn opening_without_deploy_leaves_a_notice() {
    let no_auto = repo_config::parse("preview:\n  auto: false\n").unwrap();
    let draft = PullRequest {
        draft: true,
        ..pull("abc0001")
    };
    let draft_fork = PullRequest {
        draft: true,
        ..fork_pull("abc0001")
    };
    let cases: [(&str, PullRequest, &RepoConfig, Notice); 4] = [
        ("draft", draft, &config(), Notice::Draft),
        ("draft fork", draft_fork, &config(), Notice::Draft),
        ("fork", fork_pull("abc0001"), &config(), Notice::Fork),
        ("auto off", pull("abc0001"), &no_auto, Notice::OnDemand),
    ];
    for (name, pr, cfg, notice) in cases {
        for action in OPENING {
            let a = acts(decide(&pr_event(action.clone(), pr.clone()), cfg, &state()));
            assert!(deploys(&a).is_empty(), "{name} {action:?}: {a:#?}");
            assert_eq!(notices(&a), vec![Some(notice.clone())], "{name} {action:?}");
        }
    }
}

#[test]
fn draft_conversion_and_labels_are_ignored() {
    let mut st = state();
    st.envs.push(pr_preview(EnvState::Live));
    for action in [
        PrAction::ConvertedToDraft,
        PrAction::Labeled { label: "x".into() },
        PrAction::Unlabeled { label: "x".into() },
    ] {
        ignored(decide(&pr_event(action, pull("abc0001")), &config(), &st));
    }
}

/// What the engine decides before reading anything is exactly what `decide` ignores in every
/// state: labels, whatever the environments and the configuration.
#[test]
fn labels_are_ignored_whatever_the_state() {
    let cfg = repo_config::parse("preview:\n  auto: false\n").unwrap();
    let mut live = state();
    live.envs.push(pr_preview(EnvState::Live));
    for action in [
        PrAction::Labeled { label: "x".into() },
        PrAction::Unlabeled { label: "x".into() },
    ] {
        let event = pr_event(action, pull("abc0001"));
        let early = ignored_whatever_the_state(&event);
        assert!(early.is_some());
        for st in [&state(), &live] {
            for c in [&config(), &cfg] {
                assert_eq!(
                    Some(ignored(decide(&event, c, st))),
                    early.map(str::to_owned)
                );
            }
        }
    }
    for action in [
        PrAction::Opened,
        PrAction::Synchronize { before: None },
        PrAction::ConvertedToDraft,
    ] {
        assert_eq!(
            ignored_whatever_the_state(&pr_event(action, pull("abc0001"))),
            None
        );
    }
}

#[test]
fn non_repository_events_are_ignored() {
    let st = state();
    ignored(decide(
        &Event::Ping {
            zen: None,
            hook_id: None,
        },
        &config(),
        &st,
    ));
    assert_eq!(
        ignored(decide(
            &Event::Ignored {
                reason: "check_run".into()
            },
            &config(),
            &st
        )),
        "check_run"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. synchronize

#[test]
fn synchronize_redeploys_an_active_preview_and_remembers_the_old_head() {
    for env_state in [
        EnvState::Live,
        EnvState::Deploying,
        EnvState::Failed,
        EnvState::Pending,
    ] {
        let mut st = state();
        let mut e = pr_preview(env_state);
        e.seen_shas = vec![sha("aaa0001")];
        st.envs.push(e);
        let a = acts(decide(&sync("aaa0001", pull("bbb0002")), &config(), &st));
        assert_eq!(
            a[0],
            Action::Remember {
                slug: pr_slug(),
                shas: vec![sha("aaa0001")]
            },
            "{env_state:?}"
        );
        let d = one_deploy(&a);
        assert_eq!(d.sha, sha("bbb0002"));
        assert_eq!(d.trigger, Trigger::Push);
        assert_eq!(d.target.slug, pr_slug());
        assert!(!d.force && !d.queue && d.ack.is_none());
    }
}

#[test]
fn synchronize_keeps_a_drafts_existing_preview_up_to_date() {
    let mut st = state();
    st.envs.push(pr_preview(EnvState::Live));
    let draft = PullRequest {
        draft: true,
        ..pull("bbb0002")
    };
    let a = acts(decide(&sync("aaa0001", draft), &config(), &st));
    assert_eq!(one_deploy(&a).sha, sha("bbb0002"));
}

#[test]
fn synchronize_naming_a_seen_commit_is_ignored() {
    let mut st = state();
    let mut e = pr_preview(EnvState::Live);
    e.seen_shas = vec![sha("aaa0001"), sha("bbb0002"), sha("ccc0003")];
    st.envs.push(e);
    // A late delivery of the push that made bbb0002 the head: never moves back.
    let reason = ignored(decide(&sync("aaa0001", pull("bbb0002")), &config(), &st));
    assert!(reason.contains("already seen"), "{reason}");
    // Same for forks.
    ignored(decide(
        &sync("aaa0001", fork_pull("bbb0002")),
        &config(),
        &st,
    ));
}

#[test]
fn synchronize_after_teardown_does_not_deploy() {
    let mut st = state();
    st.envs.push(pr_preview(EnvState::Destroyed));
    let d = decide(&sync("aaa0001", pull("bbb0002")), &config(), &st);
    if let Decision::Act(a) = &d {
        assert!(deploys(a).is_empty(), "{a:#?}");
    }
}

#[test]
fn synchronize_without_a_preview_follows_the_opening_rules() {
    let no_auto = repo_config::parse("preview:\n  auto: false\n").unwrap();
    let draft = PullRequest {
        draft: true,
        ..pull("bbb0002")
    };
    // auto, not draft: deploy (e.g. the `opened` delivery was lost).
    let a = acts(decide(
        &sync("aaa0001", pull("bbb0002")),
        &config(),
        &state(),
    ));
    assert_eq!(one_deploy(&a).sha, sha("bbb0002"));
    assert_eq!(one_deploy(&a).trigger, Trigger::Push);
    assert!(
        !a.iter().any(|x| matches!(x, Action::Remember { .. })),
        "nothing to remember for an environment that does not exist: {a:#?}"
    );
    // draft or auto off: nothing.
    ignored(decide(&sync("aaa0001", draft), &config(), &state()));
    ignored(decide(
        &sync("aaa0001", pull("bbb0002")),
        &no_auto,
        &state(),
    ));
}

#[test]
fn fork_synchronize_deploys_only_the_approved_commit() {
    let mut st = state();
    st.envs.push(pr_preview(EnvState::Live));
    st.pr_record = Some(PrRecord {
        approved_sha: Some(sha("bbb0002")),
        ..PrRecord::default()
    });
    let a = acts(decide(
        &sync("aaa0001", fork_pull("bbb0002")),
        &config(),
        &st,
    ));
    let d = one_deploy(&a);
    assert_eq!(d.sha, sha("bbb0002"));
    assert_eq!(
        d.target.clone_url.as_deref(),
        Some("https://github.com/mallory/webapp.git")
    );

    // A new, unapproved commit: the notice asks for approval, nothing deploys.
    let a = acts(decide(
        &sync("bbb0002", fork_pull("ccc0003")),
        &config(),
        &st,
    ));
    assert!(deploys(&a).is_empty(), "{a:#?}");
    assert_eq!(
        notices(&a),
        vec![Some(Notice::ForkNeedsApproval {
            sha: sha("ccc0003")
        })]
    );
}

#[test]
fn fork_synchronize_with_a_preview_but_no_approval_asks_for_one() {
    let mut st = state();
    st.envs.push(pr_preview(EnvState::Live));
    let a = acts(decide(
        &sync("aaa0001", fork_pull("bbb0002")),
        &config(),
        &st,
    ));
    assert!(deploys(&a).is_empty(), "{a:#?}");
    assert_eq!(
        notices(&a),
        vec![Some(Notice::ForkNeedsApproval {
            sha: sha("bbb0002")
        })]
    );
}

#[test]
fn fork_synchronize_never_staged_does_nothing() {
    // No preview, no approval: the `Fork` notice from `opened` still applies.
    let d = decide(&sync("aaa0001", fork_pull("bbb0002")), &config(), &state());
    ignored(d);
}

// ---------------------------------------------------------------------------------------------
// 3. closed

#[test]
fn closing_tears_down_the_active_preview() {
    for (merged, word) in [(true, "merged"), (false, "closed")] {
        for env_state in [EnvState::Live, EnvState::Failed, EnvState::Queued] {
            let mut st = state();
            st.envs.push(pr_preview(env_state));
            let a = acts(decide(
                &pr_event(PrAction::Closed { merged }, pull("abc0001")),
                &config(),
                &st,
            ));
            let t = teardowns(&a);
            assert_eq!(t.len(), 1, "{a:#?}");
            assert_eq!(t[0].0, &pr_slug());
            assert!(t[0].1.contains(word), "{:?} lacks {word}", t[0].1);
            assert!(a.contains(&Action::MarkPrClosed {
                pr: PrNumber(PR),
                closed: true
            }));
            assert!(deploys(&a).is_empty());
        }
    }
}

#[test]
fn merging_records_the_merge_commit_for_the_sticky() {
    let merged = PullRequest {
        merged: true,
        merge_commit_sha: Some(sha("abc0009")),
        ..pull("abc0001")
    };
    for (merged, pr, recorded) in [
        (true, merged.clone(), true),
        (false, pull("abc0001"), false),
        (true, pull("abc0001"), false), // a merged event without the commit: nothing to record
    ] {
        let mut st = state();
        st.envs.push(pr_preview(EnvState::Live));
        let a = acts(decide(
            &pr_event(PrAction::Closed { merged }, pr),
            &config(),
            &st,
        ));
        let record = Action::RecordMerge {
            pr: PrNumber(PR),
            sha: sha("abc0009"),
        };
        assert_eq!(a.contains(&record), recorded, "{a:#?}");
        if recorded {
            let at = |want: &Action| a.iter().position(|x| x == want);
            assert!(
                at(&record) < a.iter().position(|x| matches!(x, Action::Teardown { .. })),
                "recorded before the teardown reports: {a:#?}"
            );
        }
    }
}

#[test]
fn closing_without_a_preview_updates_the_sticky() {
    for envs in [vec![], vec![pr_preview(EnvState::Destroyed)]] {
        for merged in [true, false] {
            let st = State {
                envs: envs.clone(),
                ..state()
            };
            let a = acts(decide(
                &pr_event(PrAction::Closed { merged }, pull("abc0001")),
                &config(),
                &st,
            ));
            assert!(teardowns(&a).is_empty(), "{a:#?}");
            assert_eq!(notices(&a), vec![Some(Notice::Closed)]);
            assert!(a.contains(&Action::MarkPrClosed {
                pr: PrNumber(PR),
                closed: true
            }));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. push and branch deletion

#[test]
fn push_to_the_default_branch_deploys_production() {
    let a = acts(decide(
        &Event::Push(push_event("main", "aaa0001", "bbb0002")),
        &config(),
        &state(),
    ));
    let d = one_deploy(&a);
    assert_eq!(d.target.kind, EnvKind::Production);
    assert_eq!(d.target.slug, Slug::production());
    assert_eq!(d.target.branch, "main");
    assert_eq!(d.target.pr, None);
    assert_eq!(d.sha, sha("bbb0002"));
    assert_eq!(d.trigger, Trigger::Merge);
    assert_eq!((d.queue, d.ttl, d.ack), (false, None, None));

    // With a production environment, the old head is remembered.
    let mut st = state();
    st.envs
        .push(env("production", EnvKind::Production, EnvState::Live));
    let a = acts(decide(
        &Event::Push(push_event("main", "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
    assert!(a.contains(&Action::Remember {
        slug: Slug::production(),
        shas: vec![sha("aaa0001")]
    }));
    assert_eq!(one_deploy(&a).sha, sha("bbb0002"));
}

#[test]
fn push_to_the_default_branch_without_deploy_on_merge_is_ignored() {
    let cfg = repo_config::parse("production:\n  deploy_on_merge: false\n").unwrap();
    ignored(decide(
        &Event::Push(push_event("main", "aaa0001", "bbb0002")),
        &cfg,
        &state(),
    ));
}

#[test]
fn push_to_the_default_branch_of_a_seen_commit_is_ignored() {
    let mut st = state();
    let mut prod = env("production", EnvKind::Production, EnvState::Live);
    prod.seen_shas = vec![sha("aaa0001"), sha("bbb0002")];
    st.envs.push(prod);
    ignored(decide(
        &Event::Push(push_event("main", "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
}

fn branch_env(branch: &str, state: EnvState) -> EnvRecord {
    let s = preview_slug(None, branch);
    let mut e = env(s.as_str(), EnvKind::Preview, state);
    e.branch = branch.into();
    e.profile = Some("lite".into());
    e.ttl_secs = Some(3 * DAY as u64);
    e
}

#[test]
fn push_redeploys_a_branch_environment_but_not_a_pr_preview() {
    let mut st = state();
    st.envs.push(branch_env("demo", EnvState::Live));
    st.envs.push(pr_preview(EnvState::Live));
    let a = acts(decide(
        &Event::Push(push_event("demo", "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
    let d = one_deploy(&a);
    assert_eq!(d.target.slug, slug("br-demo"));
    assert_eq!(d.sha, sha("bbb0002"));
    assert_eq!(d.trigger, Trigger::Push);
    assert_eq!(d.profile.as_deref(), Some("lite"));
    assert!(a.contains(&Action::Remember {
        slug: slug("br-demo"),
        shas: vec![sha("aaa0001")]
    }));

    // The PR's branch: `synchronize` redeploys it, not `push`.
    ignored(decide(
        &Event::Push(push_event(BRANCH, "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
    // A destroyed branch environment does not come back.
    let st = State {
        envs: vec![branch_env("demo", EnvState::Destroyed)],
        ..state()
    };
    ignored(decide(
        &Event::Push(push_event("demo", "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
    // Nor does a seen commit redeploy.
    let mut e = branch_env("demo", EnvState::Live);
    e.seen_shas = vec![sha("bbb0002")];
    let st = State {
        envs: vec![e],
        ..state()
    };
    ignored(decide(
        &Event::Push(push_event("demo", "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
}

#[test]
fn deleting_a_branch_tears_down_its_active_previews() {
    let mut st = state();
    st.envs.push(pr_preview(EnvState::Live));
    let mut other = branch_env("other", EnvState::Live);
    other.profile = None;
    st.envs.push(other);
    let mut gone = branch_env(BRANCH, EnvState::Destroyed);
    gone.id.slug = slug("br-old");
    st.envs.push(gone);
    for event in [deleted_push(BRANCH), branch_deleted(BRANCH)] {
        let a = acts(decide(&event, &config(), &st));
        let t = teardowns(&a);
        assert_eq!(t.len(), 1, "{a:#?}");
        assert_eq!(t[0].0, &pr_slug());
        assert!(t[0].1.contains("deleted"));
        assert!(deploys(&a).is_empty());
    }
    for event in [deleted_push("nothing-here"), branch_deleted("nothing-here")] {
        ignored(decide(&event, &config(), &st));
    }
}

#[test]
fn deleting_our_branch_leaves_a_fork_preview_of_the_same_name_alone() {
    let mut st = state();
    let mut fork = pr_preview(EnvState::Live);
    fork.fork = true;
    st.envs.push(fork);
    for event in [deleted_push(BRANCH), branch_deleted(BRANCH)] {
        ignored(decide(&event, &config(), &st));
    }
}

// ---------------------------------------------------------------------------------------------
// 5. comments

#[test]
fn comments_that_carry_no_command_are_ignored() {
    let st = comment_state(Permission::Admin);
    let bot = CommentEvent {
        author: actor("renovate[bot]"),
        ..comment_event("/stage")
    };
    let issue = CommentEvent {
        is_pr: false,
        ..comment_event("/stage")
    };
    for e in [
        Event::Comment(bot),
        Event::Comment(issue),
        comment("looks good to me"),
        comment("please /stage this"),
        comment("```\n/stage\n```"),
        comment("> /stage\n\nquoting"),
        comment("use `/stage`"),
    ] {
        ignored(decide(&e, &config(), &st));
    }
}

#[test]
fn every_command_comment_is_acknowledged_first_and_recorded_last() {
    let mut st = comment_state(Permission::Admin);
    st.envs.push(pr_preview(EnvState::Live));
    for body in [
        "/stage",
        "/status",
        "/help",
        "/teardown",
        "/extend 1d",
        "/promote",
        "/stgae",
        "/teardown now",
    ] {
        let a = acts(decide(&comment(body), &config(), &st));
        assert_eq!(
            a[0],
            Action::React {
                comment_id: COMMENT_ID,
                reaction: Reaction::Eyes
            },
            "{body}"
        );
        // recorded last, so a delivery that fails half-way is retried in full
        assert!(
            matches!(a.last(), Some(Action::CommentHandled { comment })
                if comment.comment_id == COMMENT_ID && comment.signature == command_signature(body)),
            "{body}: {a:#?}"
        );
        // each command is recorded right after its own actions
        assert_eq!(runs(&a).len(), 1, "{body}");
    }
}

#[test]
fn a_redelivered_comment_is_not_run_again() {
    let st = State {
        pr_record: Some(PrRecord {
            handled_comments: BTreeMap::from([(COMMENT_ID, command_signature("/stage"))]),
            ..PrRecord::default()
        }),
        ..comment_state(Permission::Write)
    };
    assert!(matches!(
        decide(&comment("/stage"), &config(), &st),
        Decision::Ignore(_)
    ));
}

#[test]
fn edits_that_keep_the_commands_are_ignored() {
    let st = State {
        pr_record: Some(PrRecord {
            handled_comments: BTreeMap::from([(COMMENT_ID, command_signature("/stage"))]),
            ..PrRecord::default()
        }),
        ..comment_state(Permission::Write)
    };
    let edited = |body: &str, previous: Option<&str>| {
        Event::Comment(CommentEvent {
            action: CommentAction::Edited {
                previous_body: previous.map(str::to_owned),
            },
            ..comment_event(body)
        })
    };
    // Known from the record.
    ignored(decide(&edited("/stage\n\nthanks!", None), &config(), &st));
    // Known from the previous body (the record missed it).
    let fresh = State {
        pr_record: Some(PrRecord::default()),
        ..comment_state(Permission::Write)
    };
    ignored(decide(
        &edited("/status\nfixed a typo", Some("/status\nfixed a tpyo")),
        &config(),
        &fresh,
    ));
    // New commands act.
    let a = acts(decide(&edited("/stage\n/status", None), &config(), &st));
    assert_eq!(one_deploy(&a).trigger, Trigger::Stage);
    let a = acts(decide(&edited("/status", Some("hello")), &config(), &fresh));
    assert_eq!(replies(&a).len(), 1);
}

#[test]
fn unreadable_commands_get_a_suggestion_and_the_help_text() {
    let st = comment_state(Permission::Admin);
    for (body, needles) in [
        ("/stgae", &["Did you mean `/stage`?"][..]),
        (
            "/promote productoin",
            &["Did you mean `/promote production`?"],
        ),
        ("/teardown now", &["takes no arguments"]),
        ("/extend soon", &["not a duration"]),
        ("/lgtm", &["not a stagebot command"]),
    ] {
        let a = acts(decide(&comment(body), &config(), &st));
        let mut all = needles.to_vec();
        all.push("**stagebot commands**");
        assert_refused(&a, &all);
    }
}

#[test]
fn a_bad_line_does_not_stop_the_good_ones() {
    let st = comment_state(Permission::Write);
    let a = acts(decide(&comment("/stgae\n/stage"), &config(), &st));
    assert_eq!(one_deploy(&a).sha, sha("ddd0001"));
    assert_eq!(reactions(&a), vec![Reaction::Eyes, Reaction::Confused]);
}

// ---------------------------------------------------------------------------------------------
// 6. authorization

#[test]
fn required_permissions() {
    let admin = repo_config::parse("production:\n  permission: admin\n").unwrap();
    let cases = [
        ("/status", Permission::None, Permission::None),
        ("/help", Permission::None, Permission::None),
        ("/stage", Permission::Write, Permission::Write),
        ("/stage lite", Permission::Write, Permission::Write),
        ("/teardown", Permission::Write, Permission::Write),
        ("/extend 2d", Permission::Write, Permission::Write),
        ("/promote", Permission::Write, Permission::Write),
        ("/promote staging", Permission::Write, Permission::Write),
        ("/rollback", Permission::Write, Permission::Write),
        ("/rollback preview 2", Permission::Write, Permission::Write),
        ("/rollback staging", Permission::Write, Permission::Write),
        (
            "/promote production",
            Permission::Maintain,
            Permission::Admin,
        ),
        ("/promote prod", Permission::Maintain, Permission::Admin),
        (
            "/rollback production",
            Permission::Maintain,
            Permission::Admin,
        ),
        (
            "/rollback prod abc1234",
            Permission::Maintain,
            Permission::Admin,
        ),
    ];
    for (body, default, with_admin) in cases {
        let cmd = command::parse_commands(body)
            .pop()
            .unwrap()
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(required_permission(&cmd, &config()), default, "{body}");
        assert_eq!(required_permission(&cmd, &admin), with_admin, "{body}");
    }
}

#[test]
fn readers_cannot_stage() {
    for (have, word) in [
        (Permission::None, "none"),
        (Permission::Read, "read"),
        (Permission::Triage, "triage"),
    ] {
        let a = acts(decide(&comment("/stage"), &config(), &comment_state(have)));
        assert_refused(&a, &["/stage", "**write**", &format!("**{word}**")]);
    }
}

/// A PR with a live preview (release 1 = aaa0001, release 2 = bbb0002 live) plus live staging
/// and production environments with releases of their own.
fn promotable(permission: Permission) -> State {
    let mut st = comment_state(permission);
    let p = with_releases(pr_preview(EnvState::Live), &["aaa0001", "bbb0002"], &mut st);
    st.envs.push(p);
    let s = with_releases(
        env("staging", EnvKind::Staging, EnvState::Live),
        &["5a0001", "5b0002"],
        &mut st,
    );
    st.envs.push(s);
    let prod = with_releases(
        env("production", EnvKind::Production, EnvState::Live),
        &["abc1234", "a0e0002", "a0e0003", "a0e0003"],
        &mut st,
    );
    st.envs.push(prod);
    st
}

#[test]
fn production_commands_need_the_configured_permission() {
    let admin = repo_config::parse("production:\n  permission: admin\n").unwrap();
    for body in ["/promote production", "/rollback production"] {
        // Write is not enough by default.
        let a = acts(decide(
            &comment(body),
            &config(),
            &promotable(Permission::Write),
        ));
        assert_refused(&a, &["**maintain**", "**write**"]);
        // Maintain is.
        let a = acts(decide(
            &comment(body),
            &config(),
            &promotable(Permission::Maintain),
        ));
        assert_eq!(one_deploy(&a).target.kind, EnvKind::Production, "{body}");
        // With `permission: admin`, maintain is not.
        let a = acts(decide(
            &comment(body),
            &admin,
            &promotable(Permission::Maintain),
        ));
        assert_refused(&a, &["**admin**", "**maintain**"]);
        let a = acts(decide(
            &comment(body),
            &admin,
            &promotable(Permission::Admin),
        ));
        assert_eq!(one_deploy(&a).target.kind, EnvKind::Production, "{body}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. /stage

#[test]
fn stage_deploys_the_prs_current_head() {
    let mut st = comment_state(Permission::Write);
    st.envs.push(pr_preview(EnvState::Live));
    let a = acts(decide(&comment("/stage"), &config(), &st));
    let d = one_deploy(&a);
    assert_eq!(d.sha, sha("ddd0001"));
    assert_eq!(d.target.slug, pr_slug());
    assert_eq!(d.target.pr, Some(PrNumber(PR)));
    assert_eq!(d.trigger, Trigger::Stage);
    assert_eq!(d.ack, Some(COMMENT_ID));
    assert!(d.force);
    assert_eq!(d.by, "bob");
    assert_eq!(d.profile, None);
    assert_eq!(d.ttl, Some(Duration::from_secs(3 * DAY as u64)));
    assert!(!a.iter().any(|x| matches!(x, Action::ApproveFork { .. })));
    // Deferred: 👀 now, the outcome reacts later.
    assert_eq!(reactions(&a), vec![Reaction::Eyes]);
}

#[test]
fn stage_works_without_a_preview_and_with_auto_off() {
    let cfg = repo_config::parse("preview:\n  auto: false\n").unwrap();
    let a = acts(decide(
        &comment("/stage"),
        &cfg,
        &comment_state(Permission::Write),
    ));
    assert_eq!(one_deploy(&a).sha, sha("ddd0001"));
}

/// A fork PR whose head on GitHub is `head`, with the heads stagebot received (arrival
/// sequence, commit), and a comment that arrived as delivery 100.
fn fork_state(head: &str, seen: &[(u64, &str)]) -> State {
    let mut st = comment_state(Permission::Write);
    st.pr_info = Some(PrInfo {
        fork: true,
        head_clone_url: "https://github.com/mallory/webapp.git".into(),
        ..pr_info(head)
    });
    st.pr_record = Some(PrRecord {
        heads: seen.iter().map(|(seq, s)| (*seq, sha(s))).collect(),
        ..PrRecord::default()
    });
    st.received = Some(100);
    st
}

#[test]
fn stage_on_a_fork_approves_the_commit() {
    let st = fork_state("ddd0001", &[(7, "ddd0001")]);
    let a = acts(decide(&comment("/stage"), &config(), &st));
    assert!(a.contains(&Action::ApproveFork {
        pr: PrNumber(PR),
        sha: sha("ddd0001")
    }));
    let d = one_deploy(&a);
    assert_eq!(d.sha, sha("ddd0001"));
    assert_eq!(
        d.target.clone_url.as_deref(),
        Some("https://github.com/mallory/webapp.git")
    );
}

#[test]
fn stage_on_a_closed_pr_is_refused() {
    let mut st = comment_state(Permission::Write);
    st.pr_info = Some(PrInfo {
        open: false,
        merged: true,
        ..pr_info("ddd0001")
    });
    let a = acts(decide(&comment("/stage"), &config(), &st));
    assert_refused(&a, &["closed"]);
}

fn with_profiles(names: &[&str]) -> RepoConfig {
    let mut cfg = config();
    for n in names {
        cfg.preview.profiles.insert((*n).into(), Profile::default());
    }
    cfg
}

#[test]
fn stage_with_a_profile() {
    let st = comment_state(Permission::Write);
    let a = acts(decide(
        &comment("/stage lite"),
        &with_profiles(&["full", "lite"]),
        &st,
    ));
    assert_eq!(one_deploy(&a).profile.as_deref(), Some("lite"));

    let a = acts(decide(
        &comment("/stage lite"),
        &with_profiles(&["full", "big"]),
        &st,
    ));
    assert_refused(&a, &["`lite`", "`big`, `full`"]);

    let a = acts(decide(&comment("/stage lite"), &config(), &st));
    assert_refused(&a, &["`lite`", "no profiles"]);
}

/// Fork approval is bound to a commit the maintainer saw: the head stagebot recorded from the
/// events received before the comment, or the one named in `/stage <sha>`.
#[test]
fn fork_approval_decision_table() {
    // (GitHub's head now, heads received (seq, sha), comment, deployed or refused with)
    type Case = (
        &'static str,
        &'static [(u64, &'static str)],
        &'static str,
        Result<&'static str, &'static [&'static str]>,
    );
    let cases: &[Case] = &[
        // The head seen before the comment is still the head: approved and deployed.
        ("aaa0001", &[(5, "aaa0001")], "/stage", Ok("aaa0001")),
        // Pushed after the comment (seq 101 > 100): the head before the comment was aaa0001,
        // GitHub's is now bbb0002 → nothing built, the reply names the new head.
        (
            "bbb0002",
            &[(5, "aaa0001"), (101, "bbb0002")],
            "/stage",
            Err(&["moved to `bbb0002`", "`aaa0001`", "`/stage bbb0002"]),
        ),
        // Pushed after the comment and not even received yet: same.
        (
            "bbb0002",
            &[(5, "aaa0001")],
            "/stage",
            Err(&["moved to `bbb0002`", "`/stage bbb0002"]),
        ),
        // The profile is kept in the suggestion.
        (
            "bbb0002",
            &[(5, "aaa0001")],
            "/stage lite",
            Err(&["`/stage lite bbb0002"]),
        ),
        // Received before the comment: that head is the one approved.
        (
            "bbb0002",
            &[(5, "aaa0001"), (99, "bbb0002")],
            "/stage",
            Ok("bbb0002"),
        ),
        // No head recorded at all (stagebot installed after the PR opened): nothing built.
        (
            "ccc0003",
            &[],
            "/stage",
            Err(&["no record", "`/stage ccc0003"]),
        ),
        // Only heads after the comment recorded: nothing built.
        (
            "ccc0003",
            &[(150, "ccc0003")],
            "/stage",
            Err(&["no record"]),
        ),
        // `/stage <sha>` of a head received after the comment: a short prefix could have been
        // ground by the fork author; 12 digits are needed.
        (
            "bbb0002",
            &[(5, "aaa0001"), (101, "bbb0002")],
            "/stage bbb0002",
            Err(&[
                "is not a commit",
                "at least 12 digits",
                "`/stage bbb000200000`",
            ]),
        ),
        (
            "bbb0002",
            &[(5, "aaa0001"), (101, "bbb0002")],
            "/stage bbb000200000",
            Ok("bbb0002"),
        ),
        (
            "bbb0002",
            &[(5, "aaa0001"), (101, "bbb0002")],
            "/stage aaa0001",
            Ok("aaa0001"),
        ),
        // The head now, never received: with 12 digits.
        (
            "bbb0002",
            &[(5, "aaa0001")],
            "/stage lite bbb000200000",
            Ok("bbb0002"),
        ),
        // An earlier head received before the comment: any 7-digit prefix.
        (
            "bbb0002",
            &[(5, "aaa0001"), (99, "bbb0002")],
            "/stage lite bbb0002",
            Ok("bbb0002"),
        ),
        // A commit that was never a head of this PR.
        (
            "bbb0002",
            &[(5, "aaa0001")],
            "/stage eee0005",
            Err(&[
                "`eee0005` is not a commit of this pull request",
                "`bbb0002`",
            ]),
        ),
        // Six hex digits are a (here unknown) profile name, not a commit.
        (
            "abc1234",
            &[(5, "abc1234")],
            "/stage abc123",
            Err(&["unknown profile"]),
        ),
        // A prefix two heads received before the comment share.
        (
            "abc1234f",
            &[(5, "abc1234e"), (7, "abc1234f")],
            "/stage abc1234",
            Err(&["more than one commit"]),
        ),
        // A newer head that shares the prefix of the reviewed one (a ground collision pushed
        // after the comment) does not count: the reviewed one is deployed.
        (
            "abc1234f",
            &[(5, "abc1234e")],
            "/stage abc1234",
            Ok("abc1234e"),
        ),
    ];
    for (head, seen, body, want) in cases {
        let st = fork_state(head, seen);
        let cfg = with_profiles(&["lite"]);
        let a = acts(decide(&comment(body), &cfg, &st));
        match want {
            Ok(deployed) => {
                let d = one_deploy(&a);
                assert_eq!(d.sha, sha(deployed), "{body} {seen:?}");
                assert!(
                    a.contains(&Action::ApproveFork {
                        pr: PrNumber(PR),
                        sha: sha(deployed)
                    }),
                    "{body} {seen:?}: {a:#?}"
                );
            }
            Err(needles) => assert_refused(&a, needles),
        }
    }
}

#[test]
fn stage_of_a_commit_on_a_same_repo_pr() {
    let mut st = comment_state(Permission::Write);
    st.pr_record = Some(PrRecord {
        heads: vec![(3, sha("aaa0001")), (4, sha("ddd0001"))],
        ..PrRecord::default()
    });
    // A branch of this repository needs no approval: `/stage` deploys its head now ...
    let a = acts(decide(&comment("/stage"), &config(), &st));
    assert_eq!(one_deploy(&a).sha, sha("ddd0001"));
    // ... and `/stage <sha>` an earlier head, without approving anything.
    let a = acts(decide(&comment("/stage aaa0001"), &config(), &st));
    assert_eq!(one_deploy(&a).sha, sha("aaa0001"));
    assert!(!a.iter().any(|x| matches!(x, Action::ApproveFork { .. })));
    let a = acts(decide(&comment("/stage 0123456"), &config(), &st));
    assert_refused(&a, &["not a commit of this pull request"]);
}

#[test]
fn an_edited_stage_counts_from_when_the_edit_arrived() {
    // The comment was written at seq 50 (head aaa0001); the fork pushed bbb0002 (seq 60); the
    // maintainer edited the comment (seq 100): the edit approves bbb0002.
    let st = fork_state("bbb0002", &[(5, "aaa0001"), (60, "bbb0002")]);
    let e = Event::Comment(CommentEvent {
        action: CommentAction::Edited {
            previous_body: Some("looks good".into()),
        },
        ..comment_event("/stage")
    });
    assert_eq!(
        one_deploy(&acts(decide(&e, &config(), &st))).sha,
        sha("bbb0002")
    );
}

// ---------------------------------------------------------------------------------------------
// Comments: who acts, how many commands run, one reply, progress per command

fn edited_by(editor: &str, body: &str, previous: &str) -> Event {
    Event::Comment(CommentEvent {
        action: CommentAction::Edited {
            previous_body: Some(previous.into()),
        },
        author: actor("maria"),
        sender: actor(editor),
        ..comment_event(body)
    })
}

#[test]
fn an_edit_runs_with_the_editors_permission_and_is_credited_to_the_editor() {
    // maria (admin) wrote the comment; bob edits it into `/promote production`. The engine
    // reads the permission of the sender (bob): write is refused.
    let a = acts(decide(
        &edited_by("bob", "/promote production", "/status"),
        &config(),
        &promotable(Permission::Write),
    ));
    assert_refused(&a, &["@bob", "**maintain**", "**write**"]);
    assert!(!replies(&a)[0].contains("maria"));
    // An admin's own edit runs, as the admin.
    let a = acts(decide(
        &edited_by("maria", "/promote production", "/status"),
        &config(),
        &promotable(Permission::Admin),
    ));
    let d = one_deploy(&a);
    assert_eq!(
        (d.target.kind, d.by.as_str()),
        (EnvKind::Production, "maria")
    );
    // A bot editing a human's comment is a bot acting; a human editing a bot's comment is
    // the human acting.
    ignored(decide(
        &edited_by("renovate[bot]", "/stage", "x"),
        &config(),
        &comment_state(Permission::Admin),
    ));
    let e = Event::Comment(CommentEvent {
        action: CommentAction::Edited {
            previous_body: None,
        },
        author: actor("stagebot[bot]"),
        ..comment_event("/stage")
    });
    let a = acts(decide(&e, &config(), &comment_state(Permission::Write)));
    assert_eq!(one_deploy(&a).by, "bob");
}

#[test]
fn at_most_ten_commands_run_and_one_reply_answers_all() {
    let st = comment_state(Permission::Write);
    let body = "/status\n".repeat(200);
    let a = acts(decide(&comment(&body), &config(), &st));
    assert_eq!(runs(&a).len(), MAX_COMMANDS_PER_COMMENT);
    assert_eq!(
        runs(&a).iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    let r = replies(&a);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].matches("### stagebot status").count(), 10);
    assert!(
        r[0].contains("this comment has 200 commands")
            && r[0].contains("the last 190 were not run"),
        "{}",
        r[0]
    );
    assert_eq!(reactions(&a), vec![Reaction::Eyes, Reaction::Confused]);
    // Ten `/help` and two typos: the command list once.
    let body = format!("{}/stgae\n/lgtm\n", "/help\n".repeat(8));
    let a = acts(decide(&comment(&body), &config(), &st));
    let r = replies(&a);
    assert_eq!(r[0].matches("**stagebot commands**").count(), 1, "{}", r[0]);
    assert!(r[0].contains("Did you mean `/stage`?"));
    // Exactly ten: all run, no note.
    let a = acts(decide(&comment(&"/status\n".repeat(10)), &config(), &st));
    assert_eq!(runs(&a).len(), 10);
    assert!(!replies(&a)[0].contains("not run"));
    assert_eq!(reactions(&a), vec![Reaction::Eyes, Reaction::Rocket]);
}

#[test]
fn the_combined_reply_stays_under_githubs_limit() {
    let big = CommandRun {
        outcome: Ran::Done,
        reply: Some("x".repeat(20_000)),
        help: false,
    };
    let body = messages::comment_reply("bob", &vec![big.clone(); 10], 10, 0).unwrap();
    assert!(body.len() <= GITHUB_COMMENT_LIMIT - 200, "{}", body.len());
    assert!(body.ends_with("characters per comment._"));
    assert_eq!(body.matches(&"x".repeat(20_000)).count(), 3);
    // One answer alone longer than the limit is cut too, at a character boundary.
    let huge = CommandRun {
        reply: Some("é".repeat(GITHUB_COMMENT_LIMIT)),
        ..big
    };
    let body = messages::comment_reply("bob", &[huge], 1, 0).unwrap();
    assert!(
        body.len() <= GITHUB_COMMENT_LIMIT - 200,
        "room for the marker"
    );
    assert!(messages::comment_reply("bob", &[], 0, 0).is_none());
}

#[test]
fn a_retry_neither_reruns_nor_reanswers_what_was_done() {
    let st = comment_state(Permission::Write);
    let body = "/stage\n/status\n/extend 1d\n/stgae";
    let first = acts(decide(&comment(body), &config(), &st));
    assert_eq!(runs(&first).len(), 4);
    // The first attempt recorded commands 0 and 1, then failed.
    let mut progress = crate::store::CommentProgress {
        signature: command_signature(body),
        ..Default::default()
    };
    for (i, run) in runs(&first).into_iter().take(2) {
        progress.done.insert(i, run.clone());
    }
    let mut retry = st.clone();
    retry.pr_record = Some(PrRecord {
        in_progress: BTreeMap::from([(COMMENT_ID, progress.clone())]),
        ..PrRecord::default()
    });
    let a = acts(decide(&comment(body), &config(), &retry));
    assert!(deploys(&a).is_empty(), "/stage ran already: {a:#?}");
    assert_eq!(
        runs(&a).iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![2, 3]
    );
    // The reply still answers every command (the stored answers of the done ones).
    assert_eq!(replies(&a), replies(&first));
    // Once the reply was posted, a retry does not post it again.
    progress.reply_id = Some(5);
    for i in 2..4 {
        progress.done.insert(i, runs(&first)[i].1.clone());
    }
    retry.pr_record = Some(PrRecord {
        in_progress: BTreeMap::from([(COMMENT_ID, progress.clone())]),
        ..PrRecord::default()
    });
    let a = acts(decide(&comment(body), &config(), &retry));
    assert!(runs(&a).is_empty() && replies(&a).is_empty(), "{a:#?}");
    assert!(matches!(a.last(), Some(Action::CommentHandled { .. })));
    // The progress of another version of the comment (before an edit) counts for nothing.
    progress.signature = command_signature("/status");
    retry.pr_record = Some(PrRecord {
        in_progress: BTreeMap::from([(COMMENT_ID, progress)]),
        ..PrRecord::default()
    });
    assert_eq!(
        runs(&acts(decide(&comment(body), &config(), &retry))).len(),
        4
    );
}

#[test]
fn a_stale_version_of_an_edited_comment_is_ignored() {
    let mut st = comment_state(Permission::Write);
    st.received = Some(10);
    st.pr_record = Some(PrRecord {
        handled_comments: BTreeMap::from([(COMMENT_ID, command_signature("/status"))]),
        handled_seq: BTreeMap::from([(COMMENT_ID, 12)]),
        ..PrRecord::default()
    });
    // Delivery 10 carried `/stage`; the edit to `/status` (delivery 12) was handled first.
    ignored(decide(&comment("/stage"), &config(), &st));
    // A newer delivery is not stale.
    st.received = Some(13);
    assert_eq!(
        runs(&acts(decide(&comment("/stage"), &config(), &st))).len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 8. /promote

#[test]
fn promote_deploys_the_previews_live_release_not_the_head() {
    let mut st = promotable(Permission::Write);
    // The head moved on (ddd0001) and release 2 (bbb0002) is still live.
    st.envs[0].set_deploying(Some(sha("ddd0001")));
    let a = acts(decide(&comment("/promote"), &config(), &st));
    let d = one_deploy(&a);
    assert_eq!(d.target.kind, EnvKind::Staging);
    assert_eq!(d.target.slug, Slug::staging());
    assert_eq!(d.sha, sha("bbb0002"));
    assert_eq!(
        d.trigger,
        Trigger::Promote {
            from: pr_slug(),
            release: Some(2)
        }
    );
    assert_eq!(d.ack, Some(COMMENT_ID));
    assert_eq!(d.by, "bob");
    assert!(!d.queue);

    // The live release is what counts, not the newest one.
    st.envs[0].set_current_release(Some(1));
    let a = acts(decide(&comment("/promote staging"), &config(), &st));
    assert_eq!(one_deploy(&a).sha, sha("aaa0001"));
}

#[test]
fn promote_production() {
    let st = promotable(Permission::Maintain);
    let a = acts(decide(&comment("/promote production"), &config(), &st));
    let d = one_deploy(&a);
    assert_eq!(d.target.kind, EnvKind::Production);
    assert_eq!(d.target.slug, Slug::production());
    assert_eq!(d.sha, sha("bbb0002"));
    assert_eq!(
        d.trigger,
        Trigger::Promote {
            from: pr_slug(),
            release: Some(2)
        }
    );
}

#[test]
fn staging_and_production_fetch_from_this_repository_never_a_fork() {
    let mut st = promotable(Permission::Admin);
    st.envs[0].fork = true;
    st.envs[0].clone_url = "https://github.com/mallory/webapp.git".into();
    st.envs[2].clone_url = "https://github.com/mallory/webapp.git".into();
    for body in ["/promote", "/promote production", "/rollback production"] {
        let d = one_deploy(&acts(decide(&comment(body), &config(), &st))).clone();
        assert_eq!(d.target.clone_url, None, "{body}: this repository's");
        assert!(!d.target.fork, "{body}");
    }
    // A fork's preview rolls back from the fork.
    let d = one_deploy(&acts(decide(&comment("/rollback"), &config(), &st))).clone();
    assert_eq!(
        d.target.clone_url.as_deref(),
        Some("https://github.com/mallory/webapp.git")
    );
    assert!(d.target.fork);
}

#[test]
fn promote_without_a_live_preview_is_refused() {
    // None at all.
    let a = acts(decide(
        &comment("/promote"),
        &config(),
        &comment_state(Permission::Write),
    ));
    assert_refused(&a, &["no live preview"]);
    // Never deployed successfully.
    let mut st = comment_state(Permission::Write);
    st.envs.push(pr_preview(EnvState::Deploying));
    let a = acts(decide(&comment("/promote"), &config(), &st));
    assert_refused(&a, &["no live preview"]);
    // Torn down (it keeps its history, but nothing runs).
    let mut st = promotable(Permission::Write);
    st.envs[0].set_state(EnvState::Destroyed);
    let a = acts(decide(&comment("/promote"), &config(), &st));
    assert_refused(&a, &["no live preview"]);
}

// ---------------------------------------------------------------------------------------------
// 9. /rollback

#[test]
fn rollback_goes_to_the_previous_different_commit() {
    let mut st = comment_state(Permission::Write);
    // Release 3 redeployed release 2's commit: the rollback skips it.
    let p = with_releases(
        pr_preview(EnvState::Live),
        &["aaa0001", "bbb0002", "bbb0002"],
        &mut st,
    );
    st.envs.push(p);
    let a = acts(decide(&comment("/rollback"), &config(), &st));
    let d = one_deploy(&a);
    assert_eq!(d.target.slug, pr_slug());
    assert_eq!(d.target.kind, EnvKind::Preview);
    assert_eq!(d.sha, sha("aaa0001"));
    assert_eq!(d.trigger, Trigger::Rollback { to_release: 1 });
    assert_eq!(d.ack, Some(COMMENT_ID));
    assert!(d.force);
    assert_eq!(d.ttl, Some(Duration::from_secs(3 * DAY as u64)));
}

#[test]
fn rollback_after_a_rollback_goes_further_back() {
    let mut st = comment_state(Permission::Write);
    // 1 aaa, 2 bbb, 3 ccc, 4 = rollback to bbb (live): previous different commit is ccc? No:
    // "the newest one older than the live one that ran a different commit" is release 3.
    let p = with_releases(
        pr_preview(EnvState::Live),
        &["aaa0001", "bbb0002", "ccc0003", "bbb0002"],
        &mut st,
    );
    st.envs.push(p);
    let a = acts(decide(&comment("/rollback"), &config(), &st));
    assert_eq!(one_deploy(&a).sha, sha("ccc0003"));
}

#[test]
fn rollback_to_a_named_release() {
    let st = promotable(Permission::Maintain);
    let a = acts(decide(&comment("/rollback 1"), &config(), &st));
    let d = one_deploy(&a);
    assert_eq!(d.sha, sha("aaa0001"));
    assert_eq!(d.trigger, Trigger::Rollback { to_release: 1 });

    let a = acts(decide(&comment("/rollback staging #1"), &config(), &st));
    let d = one_deploy(&a);
    assert_eq!(d.target.slug, Slug::staging());
    assert_eq!(d.target.kind, EnvKind::Staging);
    assert_eq!(d.sha, sha("5a0001"));

    let a = acts(decide(
        &comment("/rollback production abc1234"),
        &config(),
        &st,
    ));
    let d = one_deploy(&a);
    assert_eq!(d.target.slug, Slug::production());
    assert_eq!(d.target.kind, EnvKind::Production);
    assert_eq!(d.sha, sha("abc1234"));
    assert_eq!(d.trigger, Trigger::Rollback { to_release: 1 });

    // Production's previous different commit: 4 and 3 are a0e0003, so release 2.
    let a = acts(decide(&comment("/rollback production"), &config(), &st));
    assert_eq!(one_deploy(&a).trigger, Trigger::Rollback { to_release: 2 });
}

#[test]
fn rollback_refusals() {
    let mut st = comment_state(Permission::Maintain);
    let p = with_releases(pr_preview(EnvState::Live), &["aaa0001", "aaa0001"], &mut st);
    st.envs.push(p);
    // Only one commit was ever deployed.
    let a = acts(decide(&comment("/rollback"), &config(), &st));
    assert_refused(&a, &["no earlier release"]);
    // Unknown release number and unknown commit.
    let a = acts(decide(&comment("/rollback 9"), &config(), &st));
    assert_refused(&a, &["no release #9"]);
    let a = acts(decide(&comment("/rollback fedcba9"), &config(), &st));
    assert_refused(&a, &["no release of commit `fedcba9`"]);
    // No environment.
    let a = acts(decide(&comment("/rollback staging"), &config(), &st));
    assert_refused(&a, &["`staging`"]);
    let a = acts(decide(
        &comment("/rollback"),
        &config(),
        &comment_state(Permission::Write),
    ));
    assert_refused(&a, &[&format!("no `{}` environment", pr_slug())]);
}

// ---------------------------------------------------------------------------------------------
// 10. /teardown and /extend

#[test]
fn teardown_command() {
    let mut st = comment_state(Permission::Write);
    st.envs.push(pr_preview(EnvState::Live));
    let a = acts(decide(&comment("/teardown"), &config(), &st));
    assert!(a.contains(&Action::Teardown {
        slug: pr_slug(),
        reason: "/teardown by @bob".into(),
        by: "bob".into(),
        ack: Some(COMMENT_ID),
    }));
    assert_eq!(reactions(&a), vec![Reaction::Eyes]);

    for envs in [vec![], vec![pr_preview(EnvState::Destroyed)]] {
        let st = State {
            envs,
            ..comment_state(Permission::Write)
        };
        let a = acts(decide(&comment("/teardown"), &config(), &st));
        assert_refused(&a, &["no environment to tear down"]);
    }
}

fn extends(actions: &[Action]) -> Vec<DateTime<Utc>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Extend { slug, until } => {
                assert_eq!(slug, &pr_slug());
                Some(*until)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn extend_pushes_the_expiry_out() {
    let mut st = comment_state(Permission::Write);
    st.envs.push(pr_preview(EnvState::Live)); // expires in 2 days
    let a = acts(decide(&comment("/extend 2d"), &config(), &st));
    assert_eq!(extends(&a), vec![now() + secs(4 * DAY)]);
    assert!(replies(&a).is_empty(), "{a:#?}");
    assert_eq!(reactions(&a), vec![Reaction::Eyes, Reaction::Rocket]);

    // An expiry in the past (or none) counts from now.
    for expires in [Some(now() - secs(3600)), None] {
        st.envs[0].set_expires_at(expires);
        let a = acts(decide(&comment("/extend 12h"), &config(), &st));
        assert_eq!(extends(&a), vec![now() + secs(DAY / 2)], "{expires:?}");
    }
}

#[test]
fn extend_is_capped() {
    let mut st = comment_state(Permission::Write);
    st.envs.push(pr_preview(EnvState::Live)); // expires in 2 days
    st.limits.max_extend = Duration::from_secs(7 * DAY as u64);
    let a = acts(decide(&comment("/extend 6d"), &config(), &st));
    assert_eq!(extends(&a), vec![now() + secs(7 * DAY)]);
    let r = replies(&a);
    assert_eq!(r.len(), 1, "{a:#?}");
    assert!(r[0].contains("at most 7d"), "{}", r[0]);
    assert_eq!(reactions(&a), vec![Reaction::Eyes, Reaction::Rocket]);

    // Exactly at the cap: no complaint.
    let a = acts(decide(&comment("/extend 5d"), &config(), &st));
    assert_eq!(extends(&a), vec![now() + secs(7 * DAY)]);
    assert!(replies(&a).is_empty());
}

#[test]
fn extend_without_a_preview_is_refused() {
    let a = acts(decide(
        &comment("/extend 2d"),
        &config(),
        &comment_state(Permission::Write),
    ));
    assert_refused(&a, &["no preview to extend"]);
}

// ---------------------------------------------------------------------------------------------
// 11. /status and /help

#[test]
fn status_and_help_answer_anyone() {
    let mut st = promotable(Permission::Read);
    for perm in [Permission::None, Permission::Read] {
        st.permission = Some(perm);
        for (body, needle) in [
            ("/status", "stagebot status"),
            ("/help", "**stagebot commands**"),
        ] {
            let a = acts(decide(&comment(body), &config(), &st));
            let r = replies(&a);
            assert_eq!(r.len(), 1, "{body}");
            assert!(r[0].contains(needle), "{body}: {}", r[0]);
            assert_eq!(
                reactions(&a),
                vec![Reaction::Eyes, Reaction::Rocket],
                "{body} {perm:?}"
            );
        }
    }
}

#[test]
fn status_lists_the_prs_environments_and_releases() {
    let st = promotable(Permission::Read);
    let text = messages::status(PrNumber(PR), &st);
    assert!(text.contains(&format!("`{}`", pr_slug())), "{text}");
    assert!(text.contains("#2 (live)"), "{text}");
    assert!(text.contains("`bbb0002`"), "{text}");
    assert!(text.contains("`staging`"), "{text}");
    // Another PR's preview is not listed.
    let mut st = comment_state(Permission::Read);
    let mut other = pr_preview(EnvState::Live);
    other.pr = Some(PrNumber(7));
    other.id.slug = slug("pr-7-other");
    st.envs.push(other);
    let text = messages::status(PrNumber(PR), &st);
    assert!(!text.contains("pr-7-other"), "{text}");
    assert!(text.contains("No environments"), "{text}");
}

#[test]
fn an_immediate_command_next_to_a_deferred_one_waits_for_it() {
    let st = comment_state(Permission::Write);
    let a = acts(decide(&comment("/stage\n/status"), &config(), &st));
    assert_eq!(one_deploy(&a).trigger, Trigger::Stage);
    assert_eq!(replies(&a).len(), 1);
    assert_eq!(reactions(&a), vec![Reaction::Eyes]);
}

// ---------------------------------------------------------------------------------------------
// 12. capacity

fn full(mut st: State) -> State {
    st.limits.max_previews = Some(2);
    st.previews_in_use = 2;
    st
}

#[test]
fn a_new_preview_queues_when_capacity_is_used_up() {
    // Opened.
    let a = acts(decide(
        &pr_event(PrAction::Opened, pull("abc0001")),
        &config(),
        &full(state()),
    ));
    assert!(one_deploy(&a).queue);
    // /stage.
    let a = acts(decide(
        &comment("/stage"),
        &config(),
        &full(comment_state(Permission::Write)),
    ));
    assert!(one_deploy(&a).queue);
    // A destroyed preview no longer holds its slot.
    let mut st = full(state());
    st.envs.push(pr_preview(EnvState::Destroyed));
    let a = acts(decide(
        &pr_event(PrAction::Reopened, pull("abc0001")),
        &config(),
        &st,
    ));
    assert!(one_deploy(&a).queue);
    // Below the limit: no queue.
    let mut st = full(state());
    st.previews_in_use = 1;
    let a = acts(decide(
        &pr_event(PrAction::Opened, pull("abc0001")),
        &config(),
        &st,
    ));
    assert!(!one_deploy(&a).queue);
}

#[test]
fn a_preview_holding_a_slot_redeploys_without_queueing() {
    for env_state in [
        EnvState::Live,
        EnvState::Deploying,
        EnvState::Failed,
        EnvState::Pending,
    ] {
        let mut st = full(comment_state(Permission::Write));
        st.envs.push(pr_preview(env_state));
        let a = acts(decide(&sync("aaa0001", pull("bbb0002")), &config(), &st));
        assert!(!one_deploy(&a).queue, "{env_state:?}");
        let a = acts(decide(&comment("/stage"), &config(), &st));
        assert!(!one_deploy(&a).queue, "{env_state:?}");
    }
    // A queued one keeps waiting.
    let mut st = full(state());
    st.envs.push(pr_preview(EnvState::Queued));
    let a = acts(decide(&sync("aaa0001", pull("bbb0002")), &config(), &st));
    assert!(one_deploy(&a).queue);
}

fn queued(name: &str, minutes_ago: i64) -> EnvRecord {
    let mut e = env(name, EnvKind::Preview, EnvState::Queued);
    e.set_queued_at(Some(now() - secs(minutes_ago * 60)));
    e.set_op(Some(Op::Deploy {
        sha: sha("abc0001"),
        git_ref: "x".into(),
        trigger: Trigger::PullRequest,
        by: "alice".into(),
        ack: None,
        force: false,
        gate: None,
        checks: None,
    }));
    e
}

#[test]
fn dequeue_starts_the_oldest_queued_previews_that_fit() {
    let limits = Limits {
        max_previews: Some(3),
        ..Limits::default()
    };
    let mut not_queued = queued("pr-9-live", 100);
    not_queued.set_state(EnvState::Live);
    let mut no_op = queued("pr-8-idle", 90);
    no_op.set_op(None);
    let envs = vec![
        queued("pr-3-c", 10),
        queued("pr-1-a", 30),
        not_queued,
        no_op,
        queued("pr-2-b", 20),
    ];
    assert_eq!(
        dequeue(&envs, 1, &limits),
        vec![slug("pr-1-a"), slug("pr-2-b")]
    );
    assert_eq!(dequeue(&envs, 2, &limits), vec![slug("pr-1-a")]);
    assert!(dequeue(&envs, 3, &limits).is_empty());
    assert!(dequeue(&envs, 5, &limits).is_empty());
    assert_eq!(
        dequeue(&envs, 100, &Limits::default()),
        vec![slug("pr-1-a"), slug("pr-2-b"), slug("pr-3-c")]
    );
}

// ---------------------------------------------------------------------------------------------
// 13. sweeper

fn idle_preview(name: &str, ttl: i64, expires_in: i64) -> EnvRecord {
    let mut e = env(name, EnvKind::Preview, EnvState::Live);
    e.pr = Some(PrNumber(1));
    e.ttl_secs = Some(ttl as u64);
    e.set_expires_at(Some(now() + secs(expires_in)));
    e
}

#[test]
fn sweep_tears_down_expired_previews() {
    for expires_in in [0, -1, -10 * DAY] {
        let e = idle_preview("pr-1-a", 3 * DAY, expires_in);
        let a = sweep(&[e], now());
        assert_eq!(a.len(), 1, "{a:#?}");
        assert!(
            matches!(&a[0], Action::Teardown { slug: s, by, ack: None, .. } if *s == slug("pr-1-a") && by == "stagebot"),
            "{a:#?}"
        );
    }
}

/// Visits count as activity: (visit relative to now, recorded visit, expires in) → what the
/// sweeper does.
#[test]
fn sweep_counts_a_visit_as_activity() {
    let ttl = 3 * DAY;
    // The preview's last activity was a day ago (see `env`); it expired an hour ago.
    // (what, visit, visit already recorded, expires in, what the sweeper does)
    type Case = (&'static str, Option<i64>, Option<i64>, i64, &'static str);
    let cases: &[Case] = &[
        ("never visited: swept", None, None, -HOUR, "teardown"),
        (
            "visited after its expiry, within the TTL: kept",
            Some(-HOUR / 2),
            None,
            -HOUR,
            "visited",
        ),
        (
            "visited before its last activity: swept",
            Some(-2 * DAY),
            None,
            -HOUR,
            "teardown",
        ),
        (
            "a visit already recorded: swept",
            Some(-HOUR / 2),
            Some(-HOUR / 2),
            -HOUR,
            "teardown",
        ),
        (
            "visited, expiry further out already: recorded, not moved",
            Some(-HOUR),
            None,
            5 * DAY,
            "visited",
        ),
    ];
    for (title, visit, recorded, expires_in, want) in cases {
        let mut e = idle_preview("pr-1-a", ttl, *expires_in);
        e.last_visit = recorded.map(|r| now() + secs(r));
        let visit_at = visit.map(|v| now() + secs(v));
        let a = sweep_with_visits(std::slice::from_ref(&e), |_| visit_at, now());
        let got: Vec<&str> = a
            .iter()
            .map(|x| match x {
                Action::Visited { .. } => "visited",
                Action::Teardown { .. } => "teardown",
                Action::WarnExpiry { .. } => "warn",
                _ => "other",
            })
            .collect();
        assert_eq!(got.join("+"), *want, "{title}: {a:#?}");
        if let Some(Action::Visited { at, until, .. }) = a.first() {
            assert_eq!(Some(*at), visit_at, "{title}");
            let by_visit = visit_at.map(|v| v + secs(ttl));
            assert_eq!(
                *until,
                by_visit.max(e.expires_at()),
                "{title}: never earlier"
            );
        }
    }
}

#[test]
fn sweep_warns_once_within_the_window() {
    // (ttl, expires in, warn?): the window is min(1 day, ttl / 4).
    let cases = [
        (3 * DAY, 18 * 3600, true),
        (3 * DAY, 18 * 3600 + 1, false),
        (3 * DAY, 3600, true),
        (4 * 3600, 3600, true),
        (4 * 3600, 3601, false),
        (8 * DAY, DAY, true),
        (8 * DAY, DAY + 1, false),
    ];
    for (ttl, expires_in, warn) in cases {
        let e = idle_preview("pr-1-a", ttl, expires_in);
        let a = sweep(std::slice::from_ref(&e), now());
        let expected = if warn {
            vec![Action::WarnExpiry {
                slug: slug("pr-1-a"),
                at: now() + secs(expires_in),
            }]
        } else {
            vec![]
        };
        assert_eq!(a, expected, "ttl {ttl} expires in {expires_in}");
        // Once warned, nothing more until it expires.
        let mut warned = e;
        warned.set_warned_at(Some(now() - secs(60)));
        assert!(sweep(&[warned], now()).is_empty());
    }
}

#[test]
fn sweep_leaves_busy_shared_and_destroyed_environments_alone() {
    let mut busy = idle_preview("pr-1-a", 3 * DAY, -DAY);
    busy.set_op(Some(Op::Teardown {
        reason: "x".into(),
        by: "x".into(),
        ack: None,
    }));
    let mut deploying = idle_preview("pr-2-b", 3 * DAY, -DAY);
    deploying.set_state(EnvState::Deploying);
    deploying.set_op(Some(Op::Restart { release: 1 }));
    let mut destroyed = idle_preview("pr-3-c", 3 * DAY, -DAY);
    destroyed.set_state(EnvState::Destroyed);
    let mut staging = idle_preview("staging", 3 * DAY, -DAY);
    staging.kind = EnvKind::Staging;
    let mut production = idle_preview("production", 3 * DAY, -DAY);
    production.kind = EnvKind::Production;
    let mut no_expiry = idle_preview("pr-4-d", 3 * DAY, 0);
    no_expiry.set_expires_at(None);
    assert!(
        sweep(
            &[busy, deploying, destroyed, staging, production, no_expiry],
            now()
        )
        .is_empty()
    );
}

#[test]
fn extend_never_brings_the_expiry_forward() {
    // A 30-day TTL already reaches past the 14-day extension cap.
    let mut st = comment_state(Permission::Write);
    let mut e = pr_preview(EnvState::Live);
    e.set_expires_at(Some(now() + secs(20 * DAY)));
    st.envs.push(e);
    let a = acts(decide(&comment("/extend 2d"), &config(), &st));
    let until = extends(&a);
    assert_eq!(until.len(), 1, "{a:#?}");
    assert!(
        until[0] >= now() + secs(20 * DAY),
        "/extend moved the expiry from {} to {}",
        now() + secs(20 * DAY),
        until[0]
    );
    assert_eq!(replies(&a).len(), 1, "the cap is explained: {a:#?}");
}

fn tearing_down(mut e: EnvRecord) -> EnvRecord {
    e.set_state(EnvState::TearingDown);
    e.set_op(Some(Op::Teardown {
        reason: "/teardown by @bob".into(),
        by: "bob".into(),
        ack: None,
    }));
    e
}

#[test]
fn a_push_during_teardown_does_not_bring_the_preview_back() {
    let mut st = state();
    st.envs.push(tearing_down(pr_preview(EnvState::Live)));
    let d = decide(&sync("aaa0001", pull("bbb0002")), &config(), &st);
    if let Decision::Act(a) = &d {
        assert!(deploys(a).is_empty(), "{a:#?}");
    }

    let st = State {
        envs: vec![tearing_down(branch_env("demo", EnvState::Live))],
        ..state()
    };
    ignored(decide(
        &Event::Push(push_event("demo", "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
}

#[test]
fn a_late_synchronize_after_close_does_not_deploy() {
    // `closed` was processed first (the preview is gone or going); the push that preceded it
    // arrives late.
    for envs in [
        vec![],
        vec![pr_preview(EnvState::Destroyed)],
        vec![tearing_down(pr_preview(EnvState::Live))],
    ] {
        let st = State {
            envs,
            pr_record: Some(PrRecord {
                closed: true,
                ..PrRecord::default()
            }),
            ..state()
        };
        let d = decide(&sync("aaa0001", pull("bbb0002")), &config(), &st);
        if let Decision::Act(a) = &d {
            assert!(deploys(a).is_empty(), "{a:#?}");
        }
    }
}

#[test]
fn redeploys_of_a_queued_preview_keep_waiting_for_a_slot() {
    // A branch environment waiting for a slot gets a new commit.
    let mut e = branch_env("demo", EnvState::Queued);
    e.set_op(queued("br-demo", 5).op().cloned());
    let st = full(State {
        envs: vec![e],
        ..state()
    });
    let a = acts(decide(
        &Event::Push(push_event("demo", "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
    assert!(one_deploy(&a).queue, "{a:#?}");

    // A preview torn down earlier and re-staged while full is queued with its old history;
    // `/rollback` must not start it past the limit.
    let mut st = full(comment_state(Permission::Write));
    let mut p = with_releases(
        pr_preview(EnvState::Queued),
        &["aaa0001", "bbb0002"],
        &mut st,
    );
    p.set_op(queued(pr_slug().as_str(), 5).op().cloned());
    st.envs.push(p);
    let a = acts(decide(&comment("/rollback"), &config(), &st));
    assert!(one_deploy(&a).queue, "{a:#?}");

    // Shared environments never queue.
    let st = full(promotable(Permission::Maintain));
    for body in ["/rollback staging", "/rollback production", "/promote"] {
        let a = acts(decide(&comment(body), &config(), &st));
        assert!(!one_deploy(&a).queue, "{body}");
    }
    let st = full(state());
    let a = acts(decide(
        &Event::Push(push_event("main", "aaa0001", "bbb0002")),
        &config(),
        &st,
    ));
    assert!(!one_deploy(&a).queue);
}

#[test]
fn a_long_branch_name_still_gets_its_own_preview() {
    let branch = "dependabot/npm_and_yarn/babel/plugin-transform-runtime-7.23.2-and-more";
    let pr = PullRequest {
        head_ref: branch.into(),
        ..pull("abc0001")
    };
    let a = acts(decide(&pr_event(PrAction::Opened, pr), &config(), &state()));
    let d = one_deploy(&a);
    assert_eq!(d.target.kind, EnvKind::Preview);
    assert!(
        d.target.slug.as_str().starts_with("pr-42-"),
        "{}",
        d.target.slug
    );
    assert!(d.target.slug.as_str().len() <= 63);
    assert_ne!(d.target.slug, Slug::staging());
    assert_ne!(d.target.slug, Slug::production());
}

// ---------------------------------------------------------------------------------------------
// Golden file of the replies to comments: a reviewer reads the exact texts in
// `fixtures/messages/comment-replies.md`. `STAGEBOT_BLESS=1 cargo test --lib messages` rewrites
// it after an intended change.

/// The replies to whole comments, for `fixtures/messages/comment-replies.md` (compared with the
/// other golden files by `messages`' tests).
pub(crate) fn comment_replies() -> String {
    let mut live = comment_state(Permission::Write);
    let p = with_releases(
        pr_preview(EnvState::Live),
        &["aaa0001", "bbb0002"],
        &mut live,
    );
    live.envs.push(p);
    let mut hostile_profiles = comment_state(Permission::Write);
    hostile_profiles.head_profiles = Some(vec![
        "<img src=x onerror=alert(1)>".into(),
        "@everyone".into(),
        "a`b".into(),
    ]);
    let cases: Vec<(&str, Event, State)> = vec![
        (
            "a typo, a status and the command list",
            comment("/stgae\n/status\n/help"),
            live.clone(),
        ),
        (
            "a writer edits an admin's comment into /promote production",
            edited_by("bob", "/promote production", "/status"),
            promotable(Permission::Write),
        ),
        (
            "twelve commands: ten run, two not",
            comment(&"/extend 30d\n".repeat(12)),
            live.clone(),
        ),
        (
            "a fork pushed after the maintainer's /stage",
            comment("/stage lite"),
            fork_state("bbb0002", &[(5, "aaa0001"), (101, "bbb0002")]),
        ),
        (
            "a fork stagebot has no head for",
            comment("/stage"),
            fork_state("ccc0003", &[]),
        ),
        (
            "/stage of a commit that was never the head",
            comment("/stage eee0005"),
            fork_state("bbb0002", &[(5, "aaa0001")]),
        ),
        (
            "profile names from the pull request's config are quoted",
            comment("/stage lite"),
            hostile_profiles,
        ),
    ];
    let mut out = String::new();
    for (title, event, st) in cases {
        let cfg = if title.contains("fork pushed") {
            with_profiles(&["lite"])
        } else {
            config()
        };
        let a = acts(decide(&event, &cfg, &st));
        out.push_str(&format!("<!-- {title} -->\n"));
        out.push_str(replies(&a).first().copied().unwrap_or("(no reply)"));
        out.push_str("\n\n");
    }
    out
}

#[test]
fn database_plan_per_kind_profile_and_settings() {
    let with_db = repo_config::parse(
        "database: { postgres: { snapshot: webapp_snapshot } }\n\
         preview: { profiles: { lite: { database: shared }, full: {} } }\n",
    )
    .unwrap();
    let without_db =
        repo_config::parse("preview: { profiles: { lite: { database: shared } } }\n").unwrap();
    let own = DatabasePlan::Own {
        drop_on_teardown: true,
    };
    let table: &[(bool, &RepoConfig, EnvKind, Option<&str>, DatabasePlan)] = &[
        (true, &with_db, EnvKind::Preview, None, own),
        (true, &with_db, EnvKind::Preview, Some("full"), own),
        (
            true,
            &with_db,
            EnvKind::Preview,
            Some("lite"),
            DatabasePlan::SharedStaging,
        ),
        (true, &with_db, EnvKind::Preview, Some("unknown"), own),
        (
            true,
            &with_db,
            EnvKind::Staging,
            None,
            DatabasePlan::Own {
                drop_on_teardown: false,
            },
        ),
        (
            true,
            &with_db,
            EnvKind::Production,
            None,
            DatabasePlan::None,
        ),
        (false, &with_db, EnvKind::Preview, None, DatabasePlan::None),
        (false, &with_db, EnvKind::Staging, None, DatabasePlan::None),
        (
            true,
            &without_db,
            EnvKind::Preview,
            None,
            DatabasePlan::None,
        ),
        (
            true,
            &without_db,
            EnvKind::Preview,
            Some("lite"),
            DatabasePlan::None,
        ),
    ];
    for (server, config, kind, profile, want) in table {
        assert_eq!(
            database_plan(*server, config, *kind, *profile),
            *want,
            "server={server} kind={kind} profile={profile:?}"
        );
    }
    assert!(drops_database_on_teardown(EnvKind::Preview));
    assert!(!drops_database_on_teardown(EnvKind::Staging));
    assert!(!drops_database_on_teardown(EnvKind::Production));
}

// ---------------------------------------------------------------------------------------------
// 13. the release pipeline: on_merge, promotion without a preview, branch environments

#[test]
fn on_merge_decides_what_a_push_to_the_default_branch_deploys() {
    let push = Event::Push(push_event("main", "aaa0001", "bbb0002"));
    // staging: staging gets the merge commit, production is untouched
    let cfg = repo_config::parse("on_merge: staging\n").unwrap();
    let mut st = state();
    st.envs
        .push(env("production", EnvKind::Production, EnvState::Live));
    let a = acts(decide(&push, &cfg, &st));
    let d = one_deploy(&a);
    assert_eq!(d.target.kind, EnvKind::Staging);
    assert_eq!(d.target.slug, Slug::staging());
    assert_eq!(d.sha, sha("bbb0002"));
    assert_eq!(d.trigger, Trigger::Merge);
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Remember { slug, .. } if *slug == Slug::production())),
        "{a:#?}"
    );
    // a seen commit is stale for staging too
    let mut seen = env("staging", EnvKind::Staging, EnvState::Live);
    seen.seen_shas = vec![sha("bbb0002")];
    let st = State {
        envs: vec![seen],
        ..state()
    };
    ignored(decide(&push, &cfg, &st));
    // none: nothing
    let none = repo_config::parse("on_merge: none\n").unwrap();
    assert!(ignored(decide(&push, &none, &state())).contains("on_merge"));
    // production (explicit, or the default, or the alias set to true)
    for yaml in [
        "on_merge: production\n",
        "",
        "production: { deploy_on_merge: true }\n",
    ] {
        let cfg = repo_config::parse(yaml).unwrap();
        let a = acts(decide(&push, &cfg, &state()));
        assert_eq!(one_deploy(&a).target.slug, Slug::production(), "{yaml}");
    }
    // on_merge wins over the deprecated alias
    let both =
        repo_config::parse("on_merge: staging\nproduction: { deploy_on_merge: false }\n").unwrap();
    let a = acts(decide(&push, &both, &state()));
    assert_eq!(one_deploy(&a).target.slug, Slug::staging());
}

/// A merged PR (merge commit `e0e0001`) whose preview is gone; staging's releases are `shas`.
fn merged_state(permission: Permission, staging_shas: &[&str]) -> State {
    let mut st = comment_state(permission);
    st.pr_info = Some(PrInfo {
        open: false,
        merged: true,
        ..pr_info("ddd0001")
    });
    st.pr_record = Some(PrRecord {
        closed: true,
        merge_sha: Some(sha("e0e0001")),
        ..PrRecord::default()
    });
    st.envs.push(pr_preview(EnvState::Destroyed));
    if !staging_shas.is_empty() {
        let s = with_releases(
            env("staging", EnvKind::Staging, EnvState::Live),
            staging_shas,
            &mut st,
        );
        st.envs.push(s);
    }
    st
}

#[test]
fn promote_production_on_a_merged_pr_promotes_staging_running_its_merge_commit() {
    let st = merged_state(Permission::Maintain, &["5a0001", "e0e0001"]);
    let a = acts(decide(&comment("/promote production"), &config(), &st));
    let d = one_deploy(&a);
    assert_eq!(d.target.kind, EnvKind::Production);
    assert_eq!(d.target.slug, Slug::production());
    assert_eq!(d.target.pr, Some(PrNumber(PR)));
    assert_eq!((d.target.clone_url.as_ref(), d.target.fork), (None, false));
    assert_eq!(d.sha, sha("e0e0001"));
    assert_eq!(
        d.trigger,
        Trigger::Promote {
            from: Slug::staging(),
            release: Some(2)
        }
    );
    assert_eq!((d.by.as_str(), d.ack), ("bob", Some(COMMENT_ID)));

    // a writer is refused (production.permission, maintain by default)
    let st = merged_state(Permission::Write, &["5a0001", "e0e0001"]);
    assert_refused(
        &acts(decide(&comment("/promote production"), &config(), &st)),
        &["maintain"],
    );
}

#[test]
fn promote_production_on_a_merged_pr_says_what_staging_runs_when_it_cannot() {
    // staging runs another commit
    let st = merged_state(Permission::Maintain, &["e0e0001", "5b0002"]);
    assert_refused(
        &acts(decide(&comment("/promote production"), &config(), &st)),
        &["staging runs `5b00020`", "release #2", "`e0e0001`"],
    );
    // no staging at all
    let st = merged_state(Permission::Maintain, &[]);
    assert_refused(
        &acts(decide(&comment("/promote production"), &config(), &st)),
        &["staging has no live release", "`e0e0001`"],
    );
    // staging still deploying the merge commit
    let mut st = merged_state(Permission::Maintain, &["5a0001"]);
    if let Some(s) = st.envs.iter_mut().find(|e| e.kind == EnvKind::Staging) {
        s.set_op(Some(Op::Deploy {
            sha: sha("e0e0001"),
            git_ref: "main".into(),
            trigger: Trigger::Merge,
            by: "alice".into(),
            ack: None,
            force: false,
            gate: None,
            checks: None,
        }));
    }
    assert_refused(
        &acts(decide(&comment("/promote production"), &config(), &st)),
        &["still deploying", "`e0e0001`"],
    );
    // closed without a merge
    let mut st = merged_state(Permission::Maintain, &["e0e0001"]);
    st.pr_info = Some(PrInfo {
        open: false,
        merged: false,
        ..pr_info("ddd0001")
    });
    st.pr_record = Some(PrRecord {
        closed: true,
        ..PrRecord::default()
    });
    assert_refused(
        &acts(decide(&comment("/promote production"), &config(), &st)),
        &["closed without being merged"],
    );
    // `/promote` (to staging) on a merged PR still needs a live preview
    let st = merged_state(Permission::Maintain, &["e0e0001"]);
    assert_refused(
        &acts(decide(&comment("/promote"), &config(), &st)),
        &["no live preview"],
    );
}

#[test]
fn operator_promotes_a_release_of_an_environment_to_production() {
    let st = promotable(Permission::None);
    let d = operator_promote(&Slug::staging(), None, &st, &config()).unwrap();
    assert_eq!(d.target.slug, Slug::production());
    assert_eq!(d.sha, sha("5b0002"));
    assert_eq!(d.by, "operator");
    assert_eq!(
        d.trigger,
        Trigger::Promote {
            from: Slug::staging(),
            release: Some(2)
        }
    );
    let d = operator_promote(&Slug::staging(), Some(1), &st, &config()).unwrap();
    assert_eq!(d.sha, sha("5a0001"));
    let e = operator_promote(&Slug::staging(), Some(9), &st, &config()).unwrap_err();
    assert!(e.contains("no release #9"), "{e}");
    let e = operator_promote(&Slug::production(), None, &st, &config()).unwrap_err();
    assert!(e.contains("itself"), "{e}");
    let e = operator_promote(&slug("br-nope"), None, &st, &config()).unwrap_err();
    assert!(e.contains("no active `br-nope`"), "{e}");
}

#[test]
fn a_push_to_a_matching_branch_deploys_its_branch_environment() {
    let cfg = repo_config::parse("branches: [\"release/*\", \"qa/**\"]\n").unwrap();
    for branch in ["release/1.2", "qa/a/b"] {
        let a = acts(decide(
            &Event::Push(push_event(branch, "0000000", "bbb0002")),
            &cfg,
            &state(),
        ));
        let d = one_deploy(&a);
        assert_eq!(d.target.kind, EnvKind::Preview);
        assert_eq!(d.target.slug, preview_slug(None, branch));
        assert!(d.target.slug.as_str().starts_with("br-"));
        assert_eq!(d.target.branch, branch);
        assert_eq!((d.target.pr, d.target.fork), (None, false));
        assert_eq!(d.trigger, Trigger::Push);
        assert_eq!(d.ttl, Some(cfg.preview.ttl));
        // a new branch (before = 0) remembers nothing
        assert!(!a.iter().any(|x| matches!(x, Action::Remember { .. })));
    }
    // a non-matching branch deploys nothing
    for branch in ["feature/x", "release/1/2", "qa"] {
        ignored(decide(
            &Event::Push(push_event(branch, "aaa0001", "bbb0002")),
            &cfg,
            &state(),
        ));
    }
    // a swept (destroyed) branch environment comes back on the next push
    let st = State {
        envs: vec![branch_env("release/1.2", EnvState::Destroyed)],
        ..state()
    };
    let a = acts(decide(
        &Event::Push(push_event("release/1.2", "aaa0001", "bbb0002")),
        &cfg,
        &st,
    ));
    let d = one_deploy(&a);
    assert_eq!(d.target.slug, preview_slug(None, "release/1.2"));
    assert_eq!(d.profile.as_deref(), Some("lite"));
    // under a preview limit it queues like a preview
    let st = State {
        previews_in_use: 2,
        limits: Limits {
            max_previews: Some(2),
            ..Limits::default()
        },
        ..state()
    };
    let a = acts(decide(
        &Event::Push(push_event("release/1.2", "0000000", "bbb0002")),
        &cfg,
        &st,
    ));
    assert!(one_deploy(&a).queue);
}

#[test]
fn a_matching_branch_with_an_open_pr_gets_only_the_prs_preview() {
    let cfg = repo_config::parse("branches: [\"release/*\"]\n").unwrap();
    let st = State {
        open_pr_branches: vec!["release/1.2".into()],
        ..state()
    };
    let why = ignored(decide(
        &Event::Push(push_event("release/1.2", "aaa0001", "bbb0002")),
        &cfg,
        &st,
    ));
    assert!(why.contains("open pull request"), "{why}");
    // another matching branch is not affected
    let a = acts(decide(
        &Event::Push(push_event("release/2.0", "aaa0001", "bbb0002")),
        &cfg,
        &st,
    ));
    assert_eq!(one_deploy(&a).target.branch, "release/2.0");
}

#[test]
fn deleting_a_branch_tears_down_its_branch_environment() {
    let mut st = state();
    st.envs.push(branch_env("release/1.2", EnvState::Live));
    for event in [deleted_push("release/1.2"), branch_deleted("release/1.2")] {
        let a = acts(decide(&event, &config(), &st));
        let t = teardowns(&a);
        assert_eq!(t.len(), 1, "{a:#?}");
        assert_eq!(t[0].0, &preview_slug(None, "release/1.2"));
    }
}

// ---------------------------------------------------------------------------------------------
// 14. CI gates (require_checks)

fn ci(name: &str, state: crate::github::CiState) -> crate::github::CiResult {
    crate::github::CiResult {
        name: name.into(),
        state,
    }
}

#[test]
fn ci_gate_decision_table() {
    use crate::github::CiState::{Failure, Pending, Success};
    let named = CiGate::Named(vec!["build".into(), "test".into(), "lint".into()]);
    let only_test = CiGate::Named(vec!["test".into()]);
    let cases: Vec<(&CiGate, Vec<crate::github::CiResult>, &str)> = vec![
        // every named check passed (stagebot's own statuses are never counted)
        (
            &named,
            vec![
                ci("build", Success),
                ci("test", Success),
                ci("lint", Success),
                ci("stagebot/staging", Failure),
            ],
            "pass: CI passed: `build`, `test`, `lint`",
        ),
        (
            &named,
            vec![
                ci("build", Success),
                ci("test", Pending),
                ci("lint", Success),
            ],
            "wait: waiting for CI: 2 of 3 checks passed; pending: `test`",
        ),
        (
            &named,
            vec![ci("build", Success), ci("test", Success)],
            "wait: waiting for CI: 2 of 3 checks passed; not reported yet: `lint`",
        ),
        (
            &named,
            vec![
                ci("build", Success),
                ci("test", Failure),
                ci("lint", Pending),
            ],
            "fail: CI failed: `test` (required by `require_checks`); nothing was deployed",
        ),
        // a re-run: the newest result (listed first) counts
        (
            &named,
            vec![
                ci("build", Success),
                ci("test", Success),
                ci("test", Failure),
                ci("lint", Success),
            ],
            "pass: CI passed: `build`, `test`, `lint`",
        ),
        // unlisted checks do not matter to a list
        (
            &only_test,
            vec![ci("test", Success), ci("slow", Failure)],
            "pass: CI passed: `test`",
        ),
        // true: at least one, all complete and successful
        (
            &CiGate::All,
            vec![],
            "wait: waiting for CI: no check or status reported yet",
        ),
        (
            &CiGate::All,
            vec![ci("stagebot/production", Success)],
            "wait: waiting for CI: no check or status reported yet",
        ),
        (
            &CiGate::All,
            vec![ci("a", Success), ci("b", Pending)],
            "wait: waiting for CI: 1 of 2 checks passed; pending: `b`",
        ),
        (
            &CiGate::All,
            vec![ci("a", Failure), ci("b", Failure)],
            "fail: CI failed: `a`, `b` (required by `require_checks`); nothing was deployed",
        ),
        (
            &CiGate::All,
            vec![ci("a", Success), ci("ci/status", Success)],
            "pass: CI passed: `a`, `ci/status`",
        ),
        // names from CI apps are code spans in the texts
        (
            &CiGate::All,
            vec![ci("x` @all <b>", Pending)],
            "wait: waiting for CI: 0 of 1 checks passed; pending: ``x` @all <b>``",
        ),
    ];
    for (gate, results, want) in cases {
        let got = match ci_gate(gate, &results) {
            GateVerdict::Pass(t) => format!("pass: {t}"),
            GateVerdict::Wait(t) => format!("wait: {t}"),
            GateVerdict::Fail(t) => format!("fail: {t}"),
        };
        assert_eq!(got, want, "{gate:?} {results:?}");
    }
    assert!(messages::ci(&CiText::Unreadable { forbidden: true }).contains("`checks: read`"));
}

#[test]
fn deploys_carry_the_gate_of_their_kind() {
    let cfg = repo_config::parse(
        "on_merge: staging\nstaging: { require_checks: true }\nproduction: { require_checks: [test] }\n",
    )
    .unwrap();
    // a merge to staging waits for every check
    let a = acts(decide(
        &Event::Push(push_event("main", "aaa0001", "bbb0002")),
        &cfg,
        &state(),
    ));
    assert_eq!(one_deploy(&a).gate, Some(CiGate::All));
    // previews do not wait unless preview.require_checks is set
    let open = pr_event(PrAction::Opened, pull("abc0001"));
    assert_eq!(one_deploy(&acts(decide(&open, &cfg, &state()))).gate, None);
    let gated = repo_config::parse("preview: { require_checks: [unit] }\n").unwrap();
    assert_eq!(
        one_deploy(&acts(decide(&open, &gated, &state()))).gate,
        Some(CiGate::Named(vec!["unit".into()]))
    );
    // a promotion to production waits for production's gate
    let st = promotable(Permission::Maintain);
    let a = acts(decide(&comment("/promote production"), &cfg, &st));
    let d = one_deploy(&a);
    assert_eq!(d.gate, Some(CiGate::Named(vec!["test".into()])));
    assert_eq!(d.checks, None);
    // so does the operator's
    let d = operator_promote(&Slug::staging(), None, &st, &cfg).unwrap();
    assert_eq!(d.gate, Some(CiGate::Named(vec!["test".into()])));
    // a rollback goes back to a release that ran before: no gate
    let a = acts(decide(&comment("/rollback production"), &cfg, &st));
    assert_eq!(one_deploy(&a).gate, None);
}

#[test]
fn skip_checks_is_for_admins_and_is_recorded() {
    let cfg = repo_config::parse("production: { require_checks: true }\n").unwrap();
    for p in [Permission::Write, Permission::Maintain] {
        let st = promotable(p);
        assert_refused(
            &acts(decide(
                &comment("/promote production --skip-checks"),
                &cfg,
                &st,
            )),
            &["needs **admin**"],
        );
    }
    let st = promotable(Permission::Admin);
    let a = acts(decide(
        &comment("/promote production --skip-checks"),
        &cfg,
        &st,
    ));
    let d = one_deploy(&a);
    assert_eq!(d.gate, None);
    assert_eq!(
        d.checks.as_deref(),
        Some("CI checks skipped by @bob (`--skip-checks`)")
    );
    assert_eq!(d.sha, sha("bbb0002"));
    // on a merged PR too
    let st = merged_state(Permission::Admin, &["e0e0001"]);
    let a = acts(decide(
        &comment("/promote production --skip-checks"),
        &cfg,
        &st,
    ));
    let d = one_deploy(&a);
    assert_eq!((d.gate.as_ref(), d.sha.clone()), (None, sha("e0e0001")));
    assert!(d.checks.is_some());
}

#[test]
fn check_events_recheck_only_deploys_waiting_for_that_commit() {
    let waiting = |slug_: &str, kind, sha_: &str, wait: bool| {
        let mut e = env(slug_, kind, EnvState::Live);
        e.set_op(Some(Op::Deploy {
            sha: sha(sha_),
            git_ref: "main".into(),
            trigger: Trigger::Merge,
            by: "alice".into(),
            ack: None,
            force: false,
            gate: Some(CiGate::All),
            checks: None,
        }));
        e.set_ci_wait(wait.then(|| "waiting for CI".to_owned()));
        e
    };
    let st = State {
        envs: vec![
            waiting("production", EnvKind::Production, "c0ffee1", true),
            waiting("staging", EnvKind::Staging, "c0ffee1", false),
            waiting("br-x", EnvKind::Preview, "dddd001", true),
        ],
        ..state()
    };
    let event = |s: &str| {
        Event::CiChanged(crate::event::CiEvent {
            repo: repo_info(),
            installation_id: Some(1),
            sha: sha(s),
            name: "test".into(),
        })
    };
    assert_eq!(
        acts(decide(&event("c0ffee1"), &config(), &st)),
        vec![Action::RecheckCi {
            slug: Slug::production()
        }]
    );
    assert!(ignored(decide(&event("eeee001"), &config(), &st)).contains("no deploy waits"));
}

// ---------------------------------------------------------------------------------------------
// Dashboard actions: the slash commands' rules, recorded as the signed-in user's

#[test]
fn dashboard_actions_need_the_commands_permissions() {
    let mut st = state();
    let p = with_releases(pr_preview(EnvState::Live), &["a1", "b2"], &mut st);
    let prod = with_releases(
        env("production", EnvKind::Production, EnvState::Live),
        &["c3", "d4"],
        &mut st,
    );
    st.envs = vec![p, prod];
    let cases = [
        // (slug, action, enough, not enough)
        (
            pr_slug(),
            DashboardAction::Promote {
                to: PromoteTarget::Staging,
            },
            Permission::Write,
            Permission::Triage,
        ),
        (
            pr_slug(),
            DashboardAction::Promote {
                to: PromoteTarget::Production,
            },
            Permission::Maintain,
            Permission::Write,
        ),
        (
            slug("production"),
            DashboardAction::Rollback { to: 1 },
            Permission::Maintain,
            Permission::Write,
        ),
        (
            slug("production"),
            DashboardAction::Redeploy,
            Permission::Maintain,
            Permission::Write,
        ),
        (
            pr_slug(),
            DashboardAction::Rollback { to: 1 },
            Permission::Write,
            Permission::Read,
        ),
        (
            pr_slug(),
            DashboardAction::Extend {
                by: Duration::from_secs(DAY as u64),
            },
            Permission::Write,
            Permission::Read,
        ),
        (
            pr_slug(),
            DashboardAction::Teardown,
            Permission::Write,
            Permission::None,
        ),
    ];
    for (slug_, action, enough, short) in cases {
        let refused = dashboard(&slug_, &action, "ada", short, &config(), &st).unwrap_err();
        assert!(
            refused.contains(&format!(
                "**{}**",
                required_permission(
                    &action.as_command(st.envs.iter().find(|e| e.id.slug == slug_).unwrap().kind),
                    &config()
                )
            )),
            "{action:?}: {refused}"
        );
        let done = dashboard(&slug_, &action, "ada", enough, &config(), &st).unwrap();
        assert!(!done.is_empty(), "{action:?}");
    }
}

#[test]
fn dashboard_rollback_is_a_release_by_the_user_announced_on_the_pr() {
    let mut st = state();
    let mut prod = with_releases(
        env("production", EnvKind::Production, EnvState::Live),
        &["c3", "d4"],
        &mut st,
    );
    prod.pr = Some(PrNumber(PR));
    st.envs = vec![prod];
    let actions = dashboard(
        &slug("production"),
        &DashboardAction::Rollback { to: 1 },
        "ada",
        Permission::Admin,
        &config(),
        &st,
    )
    .unwrap();
    let d = one_deploy(&actions);
    assert_eq!(d.sha, sha("c3"));
    assert_eq!(d.by, "ada");
    assert_eq!(
        d.trigger,
        Trigger::Dashboard {
            then: Box::new(Trigger::Rollback { to_release: 1 })
        }
    );
    assert!(d.trigger.is_rollback() && d.force && d.gate.is_none());
    assert_eq!(
        crate::messages::trigger(&d.trigger),
        "rollback to #1 (dashboard)"
    );
    let notice = notices(&actions).into_iter().flatten().next().unwrap();
    assert_eq!(
        crate::messages::notice(&notice),
        "`production` rolled back to #1 (`c300000`) from the dashboard by @ada."
    );
    // An unknown release is refused like `/rollback production 9`.
    let e = dashboard(
        &slug("production"),
        &DashboardAction::Rollback { to: 9 },
        "ada",
        Permission::Admin,
        &config(),
        &st,
    )
    .unwrap_err();
    assert!(e.contains("no release #9"), "{e}");
}

#[test]
fn dashboard_promotions_go_forward_only_and_keep_the_ci_gate() {
    let mut st = state();
    let p = with_releases(pr_preview(EnvState::Live), &["a1"], &mut st);
    let staging = with_releases(
        env("staging", EnvKind::Staging, EnvState::Live),
        &["e5"],
        &mut st,
    );
    st.envs = vec![p, staging];
    let cfg = repo_config::parse("production:\n  require_checks: true\n").unwrap();
    let actions = dashboard(
        &slug("staging"),
        &DashboardAction::Promote {
            to: PromoteTarget::Production,
        },
        "ada",
        Permission::Admin,
        &cfg,
        &st,
    )
    .unwrap();
    let d = one_deploy(&actions);
    assert_eq!(
        (d.target.kind, d.sha.clone()),
        (EnvKind::Production, sha("e5"))
    );
    assert!(d.gate.is_some(), "production's require_checks applies");
    for (from, to) in [
        ("staging", PromoteTarget::Staging),
        ("production", PromoteTarget::Production),
    ] {
        let e = dashboard(
            &slug(from),
            &DashboardAction::Promote { to },
            "ada",
            Permission::Admin,
            &config(),
            &st,
        );
        assert!(e.is_err(), "{from} → {to:?}");
    }
    // Shared environments are not torn down or extended from the dashboard.
    for action in [
        DashboardAction::Teardown,
        DashboardAction::Extend {
            by: Duration::from_secs(60),
        },
    ] {
        assert!(
            dashboard(
                &slug("staging"),
                &action,
                "ada",
                Permission::Admin,
                &config(),
                &st
            )
            .is_err()
        );
    }
}

#[test]
fn dashboard_extend_is_capped_like_the_command() {
    let mut st = state();
    let p = with_releases(pr_preview(EnvState::Live), &["a1"], &mut st);
    st.envs = vec![p];
    let actions = dashboard(
        &pr_slug(),
        &DashboardAction::Extend {
            by: Duration::from_secs(100 * DAY as u64),
        },
        "ada",
        Permission::Write,
        &config(),
        &st,
    )
    .unwrap();
    let until = actions.iter().find_map(|a| match a {
        Action::Extend { until, .. } => Some(*until),
        _ => None,
    });
    assert_eq!(until, Some(now() + secs(14 * DAY)));
}

/// Destroyed environments are archived out of the policy's state (`store/archive.rs`): the
/// engine gives [`decide`] the live ones and, of the destroyed ones, those [`slugs_named`]
/// names. For every event of the table and every history of destroyed environments, the
/// decision is the one taken with all of them.
#[test]
fn decisions_read_only_the_destroyed_environments_the_event_names() {
    let destroyed = |mut e: EnvRecord, seen: &[&str]| {
        e.set_state(EnvState::Destroyed);
        e.seen_shas = seen.iter().map(|s| sha(s)).collect();
        e.profile = Some("lite".into());
        e
    };
    // Destroyed: this PR's preview, another PR's, the branch environments of `feature/login`
    // and of another branch, staging and production; each saw commits `a1` and `b2`.
    let history = [
        destroyed(pr_preview(EnvState::Live), &["a1", "b2"]),
        destroyed(
            {
                let mut e = env("pr-7-other", EnvKind::Preview, EnvState::Live);
                e.pr = Some(PrNumber(7));
                e.branch = "other".into();
                e
            },
            &["a1", "b2"],
        ),
        destroyed(branch_env(BRANCH, EnvState::Live), &["a1", "b2"]),
        destroyed(branch_env("release/next", EnvState::Live), &["a1", "b2"]),
        destroyed(
            env("staging", EnvKind::Staging, EnvState::Live),
            &["a1", "b2"],
        ),
        destroyed(
            env("production", EnvKind::Production, EnvState::Live),
            &["a1", "b2"],
        ),
    ];
    let live = [branch_env("live/branch", EnvState::Live)];
    let mut events = Vec::new();
    for head in ["a1", "b2", "c3"] {
        for action in [
            PrAction::Opened,
            PrAction::Reopened,
            PrAction::ReadyForReview,
            PrAction::Closed { merged: false },
            PrAction::Closed { merged: true },
            PrAction::Synchronize {
                before: Some(sha("b2")),
            },
            PrAction::Synchronize { before: None },
        ] {
            events.push(pr_event(action.clone(), pull(head)));
            events.push(pr_event(action, fork_pull(head)));
        }
        for branch in ["main", BRANCH, "release/next", "live/branch", "new/one"] {
            events.push(Event::Push(push_event(branch, "b2", head)));
            events.push(Event::Push(push_event(branch, "0000000", head)));
        }
    }
    events.push(deleted_push(BRANCH));
    events.push(branch_deleted(BRANCH));
    for body in [
        "/stage",
        "/status",
        "/teardown",
        "/extend 2d",
        "/promote staging",
    ] {
        events.push(comment(body));
    }
    let mut configs = vec![config()];
    let mut branches = config();
    branches.branches = vec!["release/*".into(), "feature/*".into(), "new/*".into()];
    configs.push(branches);
    for on_merge in ["staging", "none"] {
        configs.push(repo_config::parse(&format!("on_merge: {on_merge}\n")).unwrap());
    }
    let mut compared = 0;
    for event in &events {
        for config in &configs {
            // Every subset of the history: 2^6.
            for mask in 0u32..(1 << history.len()) {
                let kept: Vec<EnvRecord> = history
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, e)| e.clone())
                    .collect();
                let base = if matches!(event, Event::Comment(_)) {
                    comment_state(Permission::Admin)
                } else {
                    state()
                };
                let mut all = base.clone();
                all.envs = live.iter().chain(&kept).cloned().collect();
                let named = slugs_named(event);
                let pr = pr_named(event);
                let mut reduced = base;
                reduced.envs = live
                    .iter()
                    .chain(kept.iter().filter(|e| {
                        named.contains(&e.id.slug)
                            || pr.is_some_and(|pr| e.pr == Some(pr) || e.kind != EnvKind::Preview)
                    }))
                    .cloned()
                    .collect();
                assert_eq!(
                    decide(event, config, &all),
                    decide(event, config, &reduced),
                    "{event:?} with destroyed {:?}",
                    kept.iter().map(|e| e.id.slug.as_str()).collect::<Vec<_>>()
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 10_000, "{compared}");
}
