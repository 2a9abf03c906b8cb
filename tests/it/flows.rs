//! The pull-request stories end to end: signed webhooks in, the real server, worker, store and
//! local provider with real processes, the fake GitHub over HTTP; assertions on what GitHub
//! received and on what the preview URL serves.

use stagebot::environment::EnvState;
use stagebot::slug::preview_slug;
use stagebot::testkit::{GitRepo, Stack, StackOptions, TestPr, python_app_files};
use stagebot::types::{EnvId, Permission, RepoName, Sha, Slug};

pub struct World {
    pub stack: Stack,
    pub git: GitRepo,
    pub main_sha: Sha,
    pub _dir: tempfile::TempDir,
    pub _check: NoFailedDeliveries,
}

impl World {
    pub async fn new(extra_config: &str) -> World {
        Self::with(extra_config, |_| {}).await
    }

    pub async fn with(extra_config: &str, tweak: impl FnOnce(&mut StackOptions)) -> World {
        let dir = tempfile::tempdir().unwrap();
        let files = python_app_files(extra_config);
        let (git, main_sha) = GitRepo::init(&dir.path().join("src"), &files).unwrap();
        let mut opts = StackOptions::new(&dir.path().join("data"));
        tweak(&mut opts);
        let stack = Stack::start(opts).await.unwrap();
        stack.mirror(&main_sha, &files);
        stack.mirror_ref("main", &files);
        stack.grant("alice", Permission::Write);
        stack.grant("maria", Permission::Maintain);
        World {
            _check: NoFailedDeliveries(stack.app.store().clone(), false),
            stack,
            git,
            main_sha,
            _dir: dir,
        }
    }

    /// Commit a change on `branch` (the app and config stay), mirrored into the fake.
    pub fn commit(&self, branch: &str, note: &str, extra_config: &str) -> Sha {
        let mut files = python_app_files(extra_config);
        files.push(("NOTE.txt", note.to_owned()));
        let sha = self.git.commit(branch, &files, note).unwrap();
        self.stack.mirror(&sha, &files);
        sha
    }

    pub fn env(&self, slug: &str) -> stagebot::environment::EnvRecord {
        let id = EnvId {
            repo: self.stack.repo.clone(),
            slug: Slug::new(slug).unwrap(),
        };
        self.stack
            .app
            .store()
            .env(&id)
            .unwrap()
            .unwrap_or_else(|| panic!("no env {slug}"))
    }

    pub fn preview(&self, n: u64, branch: &str) -> stagebot::environment::EnvRecord {
        self.env(preview_slug(Some(pr_no(n)), branch).as_str())
    }

    pub fn repo(&self) -> &RepoName {
        &self.stack.repo
    }
}

/// Dropped with its [`World`]: the test fails if any delivery failed (a handler errored), even
/// when its own assertions passed. A test that makes a delivery fail on purpose sets `.1`.
pub struct NoFailedDeliveries(stagebot::store::Store, pub bool);

impl Drop for NoFailedDeliveries {
    fn drop(&mut self) {
        if std::thread::panicking() || self.1 {
            return;
        }
        let failing: Vec<_> = self
            .0
            .deliveries()
            .unwrap()
            .into_iter()
            .filter(|d| d.last_error.is_some())
            .map(|d| format!("{} {}: {:?}", d.id, d.event, d.last_error))
            .collect();
        assert!(failing.is_empty(), "deliveries failed: {failing:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_pr_gets_a_preview_then_push_redeploys_then_close_tears_down() {
    let w = World::new("").await;
    let sha1 = w.commit("feature/login", "v1", "");
    let mut pr = TestPr::new(7, "feature/login", sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();

    let env = w.preview(7, "feature/login");
    assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
    let (status, body) = w.stack.get(&env.url).await.unwrap();
    assert_eq!((status, body.as_str()), (200, sha1.as_str()));

    // GitHub: a transient deployment with in_progress → success carrying the URL
    let deps = w.stack.fake.deployments(
        w.repo(),
        &format!("preview/{}", preview_slug(Some(pr_no(7)), "feature/login")),
    );
    assert_eq!(deps.len(), 1);
    assert!(deps[0].transient);
    let states: Vec<_> = deps[0].statuses.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["in_progress", "success"]);
    assert_eq!(
        deps[0].statuses[1].environment_url.as_deref(),
        Some(env.url.as_str())
    );
    // a commit status pending → success pointing at the preview
    let statuses = w.stack.fake.statuses(w.repo(), &sha1);
    let ours: Vec<_> = statuses
        .iter()
        .filter(|s| s.context == "stagebot/preview")
        .collect();
    assert_eq!(ours.first().map(|s| s.state.as_str()), Some("pending"));
    assert_eq!(ours.last().map(|s| s.state.as_str()), Some("success"));
    assert_eq!(
        ours.last().and_then(|s| s.target_url.as_deref()),
        Some(env.url.as_str())
    );
    // one sticky comment with the table
    let sticky = w.stack.sticky(7).expect("sticky comment");
    assert!(sticky.contains(&env.url), "{sticky}");
    assert!(sticky.contains(sha1.short()), "{sticky}");
    assert!(sticky.contains("live"), "{sticky}");

    // push → redeploy; the newest commit is served
    let sha2 = w.commit("feature/login", "v2", "");
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    let (status, body) = w.stack.get(&env.url).await.unwrap();
    assert_eq!((status, body.as_str()), (200, sha2.as_str()));
    assert_eq!(w.preview(7, "feature/login").current_release(), Some(2));
    // While #2 deployed, its pending status linked to #2's log, not to the live #1's.
    let pending: Vec<_> = w
        .stack
        .fake
        .statuses(w.repo(), &sha2)
        .into_iter()
        .filter(|s| s.context == "stagebot/preview" && s.state == "pending")
        .collect();
    assert!(!pending.is_empty());
    for s in &pending {
        let target = s.target_url.as_deref().unwrap_or_default();
        assert!(
            target.contains("/logs/") && target.ends_with("/2"),
            "{target}"
        );
    }
    let comments = w
        .stack
        .fake
        .comments(w.repo(), stagebot::types::PrNumber(7));
    assert_eq!(
        comments.iter().filter(|c| c.is_sticky()).count(),
        1,
        "sticky edited in place"
    );

    // close → teardown, deployment inactive, sticky says how to bring it back
    w.stack.close_pr(&mut pr, false).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(7, "feature/login").state(), EnvState::Destroyed);
    let (status, _) = w.stack.get(&env.url).await.unwrap();
    assert_eq!(status, 404);
    let deps = w.stack.fake.deployments(
        w.repo(),
        &format!("preview/{}", preview_slug(Some(pr_no(7)), "feature/login")),
    );
    assert_eq!(deps.last().and_then(|d| d.last_state()), Some("inactive"));
    let sticky = w.stack.sticky(7).unwrap();
    assert!(sticky.contains("/stage"), "{sticky}");
    assert!(sticky.contains("removed"), "{sticky}");
}

fn pr_no(n: u64) -> stagebot::types::PrNumber {
    stagebot::types::PrNumber(n)
}

/// Open PR `n` on `branch` with one commit and wait for it to settle.
async fn opened(w: &World, n: u64, branch: &str) -> (TestPr, Sha) {
    let sha = w.commit(branch, &format!("{branch} v1"), "");
    let pr = TestPr::new(n, branch, sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    (pr, sha)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_commit_wins_and_late_deliveries_never_move_back() {
    let w = World::new("").await;
    let (mut pr, sha1) = opened(&w, 3, "race").await;
    let url = w.preview(3, "race").url;
    let sha2 = w.commit("race", "v2", "");
    let sha3 = w.commit("race", "v3", "");
    // two pushes in quick succession: the second supersedes the first
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.synchronize(&mut pr, sha3.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&url).await.unwrap().1, sha3.as_str());
    // a late, redelivered synchronize for sha2 (before = sha1) changes nothing
    let mut late = pr.clone();
    late.sha = sha2.clone();
    w.stack
        .pr_event("synchronize", &late, Some(&sha1))
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&url).await.unwrap().1, sha3.as_str());
    let env = w.preview(3, "race");
    let live = w
        .stack
        .app
        .store()
        .release(&env.id, env.current_release().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(live.sha, sha3);
    let deliveries = w.stack.app.store().deliveries().unwrap();
    assert!(
        deliveries.iter().any(|d| matches!(&d.status, stagebot::store::DeliveryStatus::Ignored { reason } if reason.contains("already seen"))),
        "the late delivery is recorded as ignored with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_deploys_production_and_removes_the_preview() {
    let w = World::new("").await;
    let (mut pr, _) = opened(&w, 5, "feature/pay").await;
    assert_eq!(w.preview(5, "feature/pay").state(), EnvState::Live);
    let merge = w.git.merge("feature/pay").unwrap();
    w.stack.mirror(&merge, &python_app_files(""));
    pr.merge_sha = Some(merge.clone());
    w.stack.close_pr(&mut pr, true).await.unwrap();
    w.stack
        .push("main", &w.main_sha, &merge, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();

    assert_eq!(w.preview(5, "feature/pay").state(), EnvState::Destroyed);
    let prod = w.env("production");
    assert_eq!(prod.state(), EnvState::Live, "{:?}", prod.last_error);
    assert_eq!(
        w.stack.get(&prod.url).await.unwrap(),
        (200, merge.to_string())
    );
    let releases = w.stack.app.store().releases(&prod.id).unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].trigger, stagebot::environment::Trigger::Merge);
    let deps = w.stack.fake.deployments(w.repo(), "production");
    assert_eq!(deps.len(), 1);
    assert!(deps[0].production && !deps[0].transient);
    assert_eq!(deps[0].last_state(), Some("success"));
    let st = w.stack.fake.statuses(w.repo(), &merge);
    assert!(
        st.iter()
            .any(|s| s.context == "stagebot/production" && s.state == "success")
    );
    // the merged PR's sticky comment shows the production release the merge made
    let sticky = w.stack.sticky(5).unwrap();
    let row = sticky
        .lines()
        .find(|l| l.starts_with("| production `production`"))
        .unwrap_or_else(|| panic!("no production row:\n{sticky}"));
    assert!(
        row.contains("✅ live") && row.contains(merge.short()) && row.contains(&prod.url),
        "{row}"
    );
    assert!(sticky.contains("removed"), "{sticky}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_branch_tears_the_preview_down() {
    let w = World::new("").await;
    opened(&w, 9, "gone").await;
    let url = w.preview(9, "gone").url;
    w.stack.delete_branch("gone").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(9, "gone").state(), EnvState::Destroyed);
    assert_eq!(w.stack.get(&url).await.unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_commands_stage_promote_rollback_teardown() {
    let w = World::new("").await;
    // a draft waits for /stage
    let sha1 = w.commit("cmds", "v1", "");
    let mut pr = TestPr::new(11, "cmds", sha1.clone(), &w.git.clone_url());
    pr.draft = true;
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    assert!(
        w.stack.app.store().envs().unwrap().is_empty(),
        "drafts are not deployed"
    );
    assert!(w.stack.sticky(11).unwrap().contains("draft"));

    let c = w.stack.comment("alice", 11, "/stage").await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(11, "cmds");
    assert_eq!(env.state(), EnvState::Live);
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha1.as_str());

    let sha2 = w.commit("cmds", "v2", "");
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha2.as_str());

    // /promote puts the preview's live commit on staging
    let c = w.stack.comment("alice", 11, "/promote").await.unwrap();
    w.stack.settle().await.unwrap();
    let staging = w.env("staging");
    assert_eq!(staging.state(), EnvState::Live);
    assert_eq!(w.stack.get(&staging.url).await.unwrap().1, sha2.as_str());
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);

    // /promote production needs maintain: alice (write) is refused, maria (maintain) is not
    let c = w
        .stack
        .comment("alice", 11, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "confused"]);
    w.stack.expect_reply(11, |t| t.contains("maintain"));
    w.stack.expect_no_reply(11);
    assert!(
        w.stack
            .app
            .store()
            .envs()
            .unwrap()
            .iter()
            .all(|e| e.id.slug.as_str() != "production")
    );
    let c = w
        .stack
        .comment("maria", 11, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    let prod = w.env("production");
    assert_eq!(w.stack.get(&prod.url).await.unwrap().1, sha2.as_str());

    // /rollback: the preview goes back to release 1's commit, as release 3
    let c = w.stack.comment("alice", 11, "/rollback").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    let env = w.preview(11, "cmds");
    assert_eq!(env.current_release(), Some(3));
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha1.as_str());
    let r3 = w.stack.app.store().release(&env.id, 3).unwrap().unwrap();
    assert_eq!(
        r3.trigger,
        stagebot::environment::Trigger::Rollback { to_release: 1 }
    );

    // /rollback 2 by number
    w.stack.comment("alice", 11, "/rollback 2").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha2.as_str());
    // the deploys answered with reactions only
    w.stack.expect_no_reply(11);

    // /status answers with the history; /help with the commands
    w.stack.comment("alice", 11, "/status").await.unwrap();
    w.stack.settle().await.unwrap();
    let status = w
        .stack
        .expect_reply(11, |t| t.contains("### stagebot status"));
    assert!(
        status.contains("#4 (live)") && status.contains(sha1.short()),
        "{status}"
    );
    // an unknown command gets the help with a suggestion
    let c = w.stack.comment("alice", 11, "/stgae").await.unwrap();
    w.stack.settle().await.unwrap();
    let help = w
        .stack
        .expect_reply(11, |t| t.contains("Did you mean `/stage`?"));
    assert!(
        help.contains("/stage") && help.contains("/rollback"),
        "{help}"
    );
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "confused"]);

    // /teardown
    let c = w.stack.comment("alice", 11, "/teardown").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(11, "cmds").state(), EnvState::Destroyed);
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    assert_eq!(w.stack.get(&env.url).await.unwrap().0, 404);
    w.stack.expect_no_reply(11);
    // one sticky comment through all of it
    let stickies = w
        .stack
        .fake
        .comments(w.repo(), pr_no(11))
        .into_iter()
        .filter(|c| c.is_sticky())
        .count();
    assert_eq!(stickies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_refused_and_bots_are_ignored() {
    let w = World::new("preview:\n  auto: false\n").await;
    let sha = w.commit("auth", "v1", "preview:\n  auto: false\n");
    let pr = TestPr::new(12, "auth", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    assert!(w.stack.sticky(12).unwrap().contains("on demand"));
    w.stack.grant("rita", Permission::Read);
    let c = w.stack.comment("rita", 12, "/stage").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "confused"]);
    let refusal = w
        .stack
        .expect_reply(12, |t| t.starts_with("<!-- stagebot:reply:"));
    assert!(
        refusal.contains("write") && refusal.contains("read"),
        "{refusal}"
    );
    assert!(w.stack.app.store().envs().unwrap().is_empty());
    // the bot's own comments (and other bots') are never commands
    let mut p = stagebot::event::payloads::CommentPayload::new(w.repo(), 12, "/stage");
    p.author_login = "stagebot[bot]".into();
    p.author_is_bot = true;
    w.stack
        .send(
            "issue_comment",
            &stagebot::event::payloads::issue_comment(&p),
        )
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert!(w.stack.app.store().envs().unwrap().is_empty());
    // and get no answer
    w.stack.expect_no_reply(12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_prs_need_a_maintainer_stage_per_commit() {
    let w = World::new("").await;
    let sha1 = w.commit("fork-feature", "v1", "");
    let mut pr = TestPr::new(20, "fork-feature", sha1.clone(), &w.git.clone_url());
    pr.fork = true;
    pr.author = "stranger".into();
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    assert!(
        w.stack.app.store().envs().unwrap().is_empty(),
        "forks never deploy on their own"
    );
    assert!(w.stack.sticky(20).unwrap().contains("fork"));

    w.stack.comment("maria", 20, "/stage").await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(20, "fork-feature");
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha1.as_str());

    // a new push to the fork is not deployed until approved again
    let sha2 = w.commit("fork-feature", "v2", "");
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha1.as_str());
    assert!(w.stack.sticky(20).unwrap().contains(sha2.short()));
    w.stack.comment("maria", 20, "/stage").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha2.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_previews_are_warned_then_swept_and_extend_pushes_out() {
    let start = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let w = World::with("", |o| o.manual_clock = Some(start)).await;
    opened(&w, 30, "idle").await;
    opened(&w, 31, "busy").await;
    let clock = w.stack.clock.clone().unwrap();
    // the warning window is a quarter of the 3-day TTL (18 h, shorter than a day)
    clock.advance(chrono::Duration::hours(54) - chrono::Duration::minutes(1));
    w.stack.app.engine().sweep().await.unwrap();
    w.stack.settle().await.unwrap();
    w.stack.expect_no_reply(30);
    w.stack.expect_no_reply(31);
    // into the last day: one warning each
    clock.advance(chrono::Duration::minutes(2));
    w.stack.app.engine().sweep().await.unwrap();
    w.stack.app.engine().sweep().await.unwrap();
    w.stack.settle().await.unwrap();
    for pr in [30, 31] {
        let warnings = w.stack.read_replies(pr);
        assert_eq!(warnings.len(), 1, "warned once: {warnings:#?}");
        assert!(warnings[0].contains("/extend 2d"), "{}", warnings[0]);
    }
    assert!(w.stack.sticky(30).unwrap().contains("will be removed"));
    // #31 asks for two more days
    let c = w.stack.comment("alice", 31, "/extend 2d").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    // past the TTL: #30 goes, #31 stays
    clock.advance(chrono::Duration::days(1));
    w.stack.app.engine().sweep().await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(30, "idle").state(), EnvState::Destroyed);
    assert_eq!(w.preview(31, "busy").state(), EnvState::Live);
    assert!(w.stack.sticky(30).unwrap().contains("/stage"));
    clock.advance(chrono::Duration::days(2));
    w.stack.app.engine().sweep().await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(31, "busy").state(), EnvState::Destroyed);
    // no sweep ran inside #31's new warning window, and #30 was not warned twice
    w.stack.expect_no_reply(31);
    w.stack.expect_no_reply(30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_queues_previews_until_a_slot_frees() {
    let w = World::with("", |o| o.max_previews = Some(1)).await;
    let (mut first, _) = opened(&w, 40, "first").await;
    let (_, sha2) = opened(&w, 41, "second").await;
    let second = w.preview(41, "second");
    assert_eq!(second.state(), EnvState::Queued);
    assert!(
        w.stack.sticky(41).unwrap().contains("position 1"),
        "{}",
        w.stack.sticky(41).unwrap()
    );
    w.stack.close_pr(&mut first, false).await.unwrap();
    w.stack.settle().await.unwrap();
    let second = w.preview(41, "second");
    assert_eq!(second.state(), EnvState::Live);
    assert_eq!(w.stack.get(&second.url).await.unwrap().1, sha2.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_is_reported_with_its_log_tail() {
    let cfg = "build: \"echo compiling; echo 'error: missing semicolon' >&2; exit 3\"\n";
    let w = World::new(cfg).await;
    let sha = w.commit("broken", "v1", cfg);
    let pr = TestPr::new(50, "broken", sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(50, "broken");
    assert_eq!(env.state(), EnvState::Failed);
    let sticky = w.stack.sticky(50).unwrap();
    assert!(sticky.contains("missing semicolon"), "{sticky}");
    let deps = w.stack.fake.deployments(
        w.repo(),
        &format!("preview/{}", preview_slug(Some(pr_no(50)), "broken")),
    );
    assert_eq!(deps[0].last_state(), Some("failure"));
    let log_url = deps[0].statuses.last().unwrap().log_url.clone().unwrap();
    let (status, log) = w.stack.get(&log_url).await.unwrap();
    assert_eq!(status, 200);
    assert!(log.contains("missing semicolon"), "{log}");
    let st = w.stack.fake.statuses(w.repo(), &sha);
    assert_eq!(st.last().map(|s| s.state.as_str()), Some("failure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_brings_live_environments_back_and_reconciles_closed_prs() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::with("", |o| o.data_dir = dir.path().join("data")).await;
    let (_, sha) = opened(&w, 60, "stays").await;
    opened(&w, 61, "closes").await;
    let url = w.preview(60, "stays").url;
    let addr = w.stack.addr;
    let World {
        stack,
        git: _git,
        _check,
        ..
    } = w;
    drop(_check);
    let fake = stack.stop().await;
    // while stagebot is down, #61 is closed and the webhook is lost
    fake.set_pr_state(
        &RepoName::new("acme", "webapp").unwrap(),
        pr_no(61),
        false,
        false,
    );
    let mut opts = StackOptions::new(&dir.path().join("data"));
    opts.listen = Some(addr);
    let stack = Stack::start_with(fake, opts).await.unwrap();
    stack.settle().await.unwrap();
    let store = stack.app.store();
    let stays = store
        .env(&preview_id(&stack, 60, "stays"))
        .unwrap()
        .unwrap();
    assert_eq!(stays.state(), EnvState::Live);
    assert_eq!(
        stays.current_release(),
        Some(1),
        "a restart is not a new release"
    );
    let closes = store
        .env(&preview_id(&stack, 61, "closes"))
        .unwrap()
        .unwrap();
    assert_eq!(closes.state(), EnvState::Destroyed, "{closes:#?}");
    assert_eq!(stack.get(&url).await.unwrap(), (200, sha.to_string()));
}

fn preview_id(stack: &Stack, n: u64, branch: &str) -> EnvId {
    EnvId {
        repo: stack.repo.clone(),
        slug: preview_slug(Some(pr_no(n)), branch),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_explained_on_the_pr() {
    let bad = "biuld: make\nstart: ./server\n";
    let w = World::new("").await;
    let sha = w
        .git
        .commit("typo", &[(".github/stagebot.yml", bad)], "typo")
        .unwrap();
    w.stack.mirror(&sha, &[(".github/stagebot.yml", bad)]);
    let pr = TestPr::new(70, "typo", sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(70, "typo");
    assert_eq!(env.state(), EnvState::Failed);
    let sticky = w.stack.sticky(70).unwrap();
    assert!(sticky.contains("biuld"), "{sticky}");
    let st = w.stack.fake.statuses(w.repo(), &sha);
    assert_eq!(st.last().map(|s| s.state.as_str()), Some("failure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_cannot_lower_the_production_permission() {
    let w = World::new("").await;
    let lax = "production:\n  permission: write\n";
    let sha = w.commit("sneaky", "v1", lax);
    let pr = TestPr::new(71, "sneaky", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(71, "sneaky").state(), EnvState::Live);
    let c = w
        .stack
        .comment("alice", 71, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "confused"]);
    w.stack.expect_reply(71, |t| {
        t.contains("@alice: `/promote production` needs **maintain** permission")
    });
    assert!(
        w.stack
            .app
            .store()
            .envs()
            .unwrap()
            .iter()
            .all(|e| e.id.slug.as_str() != "production")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_code_and_quotes_do_nothing_and_edits_rerun_only_changed_commands() {
    let w = World::new("preview:\n  auto: false\n").await;
    let sha = w.commit("quiet", "v1", "preview:\n  auto: false\n");
    let pr = TestPr::new(80, "quiet", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let body = "Try it with:\n\n```\n/stage\n```\n\n> /stage\n\nor `/stage` later, please /stage";
    let c = w.stack.comment("alice", 80, body).await.unwrap();
    w.stack.settle().await.unwrap();
    assert!(w.stack.fake.reactions(c).is_empty());
    assert!(w.stack.app.store().envs().unwrap().is_empty());
    // an edit that adds a real command runs it; editing again with the same command does not
    let mut p = stagebot::event::payloads::CommentPayload::new(w.repo(), 80, "/stage");
    p.action = "edited".into();
    p.comment_id = c;
    p.author_login = "alice".into();
    p.previous_body = Some(body.into());
    p.installation_id = Some(stagebot::testkit::INSTALLATION);
    w.stack
        .send(
            "issue_comment",
            &stagebot::event::payloads::issue_comment(&p),
        )
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(80, "quiet").current_release(), Some(1));
    p.body = "/stage\n\n(typo fixed)".into();
    p.previous_body = Some("/stage".into());
    w.stack
        .send(
            "issue_comment",
            &stagebot::event::payloads::issue_comment(&p),
        )
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(
        w.preview(80, "quiet").current_release(),
        Some(1),
        "same command: not re-run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_outage_delays_reports_but_loses_nothing() {
    use stagebot::fake_github::{Fault, FaultKind};
    let w = World::new("").await;
    let sha = w.commit("outage", "v1", "");
    let pr = TestPr::new(90, "outage", sha.clone(), &w.git.clone_url());
    // GitHub fails every deployment and status call for a while (longer than our retries)
    w.stack.fake.inject_fault(Fault::new(
        "/repos/acme/webapp/deployments",
        200,
        FaultKind::Status500,
    ));
    w.stack.fake.inject_fault(Fault::new(
        "/repos/acme/webapp/statuses",
        200,
        FaultKind::Status500,
    ));
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(90, "outage");
    assert_eq!(
        env.state(),
        EnvState::Live,
        "the deploy itself does not need GitHub"
    );
    assert!(env.report_pending, "the report waits for GitHub");
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha.as_str());
    // GitHub comes back; the reconciler sends what was missed
    w.stack.fake.clear_faults();
    w.stack.app.reconcile().await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(90, "outage");
    assert!(!env.report_pending);
    let deps = w
        .stack
        .fake
        .deployments(w.repo(), &format!("preview/{}", env.id.slug));
    assert_eq!(deps.len(), 1, "one deployment, created late");
    assert_eq!(deps[0].last_state(), Some("success"));
    let st = w.stack.fake.statuses(w.repo(), &sha);
    assert!(
        st.iter()
            .any(|s| s.context == "stagebot/preview" && s.state == "success")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_provider_drives_the_same_flow_with_the_teams_scripts() {
    use std::os::unix::fs::PermissionsExt;
    let scripts = tempfile::tempdir().unwrap();
    let journal = scripts.path().join("journal");
    let write = |name: &str, body: String| {
        let p = scripts.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let deploy = write(
        "deploy.sh",
        format!(
            "#!/bin/sh\nset -eu\necho \"deploy $STAGEBOT_ENV $STAGEBOT_SHA $STAGEBOT_BRANCH\" >> '{}'\necho rolling out\necho \"url=https://$STAGEBOT_SLUG.k8s.example.dev\"\n",
            journal.display()
        ),
    );
    let teardown = write(
        "teardown.sh",
        format!(
            "#!/bin/sh\nset -eu\necho \"teardown $STAGEBOT_ENV\" >> '{}'\n",
            journal.display()
        ),
    );
    let w = World::with("", |o| {
        o.command_provider = Some(stagebot::provider::command::CommandConfig {
            deploy_cmd: deploy,
            teardown_cmd: Some(teardown),
            status_cmd: None,
            timeout: std::time::Duration::from_secs(20),
        })
    })
    .await;
    let marker = format!("/tmp/stagebot-pwned-{}", std::process::id());
    let branch_owned = format!("x;touch${{IFS}}{marker};$(id)");
    let branch = branch_owned.as_str();
    let (mut pr, sha) = opened(&w, 95, branch).await;
    let env = w.preview(95, branch);
    assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
    let url = format!("https://{}.k8s.example.dev", env.id.slug);
    assert_eq!(env.url, url);
    let deps = w
        .stack
        .fake
        .deployments(w.repo(), &format!("preview/{}", env.id.slug));
    assert_eq!(
        deps[0].statuses.last().unwrap().environment_url.as_deref(),
        Some(url.as_str())
    );
    assert!(w.stack.sticky(95).unwrap().contains(&url));
    w.stack.close_pr(&mut pr, false).await.unwrap();
    w.stack.settle().await.unwrap();
    let log = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(
        log,
        format!(
            "deploy preview/{slug} {sha} {branch}\nteardown preview/{slug}\n",
            slug = env.id.slug
        )
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the branch name ran as a command"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visited_preview_is_not_swept_and_an_unvisited_one_is() {
    let start = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let w = World::with("", |o| o.manual_clock = Some(start)).await;
    opened(&w, 32, "visited").await;
    opened(&w, 33, "forgotten").await;
    let clock = w.stack.clock.clone().unwrap();
    assert!(
        w.stack
            .sticky(32)
            .unwrap()
            .contains("no visits since deploy"),
        "{}",
        w.stack.sticky(32).unwrap()
    );
    // Two and a half days later somebody opens #32's preview (through stagebot's proxy).
    clock.advance(chrono::Duration::hours(60));
    let url = w.preview(32, "visited").url;
    assert_eq!(w.stack.get(&url).await.unwrap().0, 200);
    // Past the 3-day TTL of the deploy: the unvisited preview goes, the visited one stays
    // until three days after the visit.
    clock.advance(chrono::Duration::hours(13));
    w.stack.app.engine().sweep().await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(33, "forgotten").state(), EnvState::Destroyed);
    let visited = w.preview(32, "visited");
    assert_eq!(visited.state(), EnvState::Live);
    assert_eq!(
        visited.last_visit,
        Some(start + chrono::Duration::hours(60)),
        "the visit is recorded"
    );
    assert_eq!(
        visited.expires_at(),
        Some(start + chrono::Duration::hours(60 + 72)),
        "three days after the visit"
    );
    let metrics = w
        .stack
        .get(&format!("{}/metrics", w.stack.url()))
        .await
        .unwrap()
        .1;
    assert!(
        metrics.contains(&format!(
            "stagebot_sweeper_last_run_timestamp_seconds {}",
            (start + chrono::Duration::hours(73)).timestamp()
        )),
        "{metrics}"
    );
    let (code, ready) = w
        .stack
        .get(&format!("{}/readyz", w.stack.url()))
        .await
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(
        (code, &ready["checks"]["sweeper"]["ok"]),
        (200, &serde_json::json!(true))
    );
    // A sweeper that stops running shows on /readyz (a warning: still ready).
    clock.advance(chrono::Duration::minutes(10));
    let (code, ready) = w
        .stack
        .get(&format!("{}/readyz", w.stack.url()))
        .await
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["checks"]["sweeper"]["ok"], false, "{ready}");
    // No further visit: it goes three days after the one visit.
    clock.advance(chrono::Duration::hours(60));
    w.stack.app.engine().sweep().await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(32, "visited").state(), EnvState::Destroyed);
}
