//! Comments as an attacker writes them, end to end (signed webhooks, the real server, worker,
//! store and local provider, the fake GitHub): edits run with the editor's permission, a fork
//! approval is bound to the commit the maintainer saw, one comment cannot make the bot run or
//! answer without bound, and a deleted comment is not an error.

use stagebot::environment::EnvState;
use stagebot::event::payloads::{self, CommentPayload, PrPayload};
use stagebot::fake_github::{FakePr, Fault, FaultKind, Method};
use stagebot::store::DeliveryStatus;
use stagebot::testkit::{INSTALLATION, TestPr};
use stagebot::types::{Permission, PrNumber, Sha};

use crate::flows::World;

/// Open PR `n` on `branch` with one commit and wait until its preview is live.
async fn live_pr(w: &World, n: u64, branch: &str) -> (TestPr, Sha) {
    let sha = w.commit(branch, &format!("{branch} v1"), "");
    let pr = TestPr::new(n, branch, sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    (pr, sha)
}

/// `editor` edits comment `id` (written by `author`) from `previous` to `body`.
async fn edit(w: &World, n: u64, id: u64, author: &str, editor: &str, previous: &str, body: &str) {
    let mut p = CommentPayload::new(w.repo(), n, body);
    p.action = "edited".into();
    p.comment_id = id;
    p.author_login = author.into();
    p.sender_login = Some(editor.into());
    p.previous_body = Some(previous.into());
    p.installation_id = Some(INSTALLATION);
    let (status, _) = w
        .stack
        .send("issue_comment", &payloads::issue_comment(&p))
        .await
        .unwrap();
    assert_eq!(status, 202);
}

fn production_exists(w: &World) -> bool {
    w.stack
        .app
        .store()
        .envs()
        .unwrap()
        .iter()
        .any(|e| e.id.slug.as_str() == "production")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_comment_runs_with_the_editors_permission() {
    let w = World::new("").await;
    w.stack.grant("adam", Permission::Admin);
    let (_pr, sha) = live_pr(&w, 30, "edits").await;
    let c = w.stack.comment("adam", 30, "/status").await.unwrap();
    w.stack.settle().await.unwrap();
    w.stack
        .expect_reply(30, |t| t.contains("### stagebot status"));
    w.stack.expect_no_reply(30);

    // alice (write) edits adam's (admin) comment into `/promote production`: refused, as alice.
    edit(&w, 30, c, "adam", "alice", "/status", "/promote production").await;
    w.stack.settle().await.unwrap();
    assert!(!production_exists(&w), "a writer's edit reached production");
    let replies = w.stack.read_replies(30);
    assert_eq!(replies.len(), 1, "{replies:#?}");
    let refusal = &replies[0];
    assert!(
        refusal.contains("@alice")
            && refusal.contains("**maintain**")
            && refusal.contains("**write**"),
        "{refusal}"
    );
    assert!(!refusal.contains("@adam"), "{refusal}");

    // adam's own edit runs, and production's release is credited to adam.
    edit(
        &w,
        30,
        c,
        "adam",
        "adam",
        "/promote production",
        "/promote production\n/status",
    )
    .await;
    w.stack.settle().await.unwrap();
    let prod = w.env("production");
    assert_eq!(prod.state(), EnvState::Live, "{:?}", prod.last_error);
    let release = w
        .stack
        .app
        .store()
        .release(&prod.id, prod.current_release().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!((release.by.as_str(), &release.sha), ("adam", &sha));
    // The deferred promotion answers with its reaction; `/status` with the one reply.
    let replies = w.stack.read_replies(30);
    assert_eq!(replies.len(), 1, "{replies:#?}");
    assert!(replies[0].contains("### stagebot status"), "{}", replies[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_push_after_stage_is_not_built_until_its_commit_is_named() {
    let w = World::new("").await;
    let sha1 = w.commit("fork-race", "v1", "");
    let mut pr = TestPr::new(31, "fork-race", sha1.clone(), &w.git.clone_url());
    pr.fork = true;
    pr.author = "mallory".into();
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();

    // maria reviews sha1 and comments `/stage`; mallory pushes sha2 right after. GitHub's head
    // is sha2 by the time the worker reads the pull request.
    let sha2 = w.commit("fork-race", "v2 (unreviewed)", "");
    w.stack
        .fake
        .set_pr_head(w.repo(), PrNumber(31), sha2.clone());
    let c = w.stack.comment("maria", 31, "/stage").await.unwrap();
    pr.sha = sha2.clone();
    w.stack
        .pr_event("synchronize", &pr, Some(&sha1))
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    let built: Vec<Sha> = w
        .stack
        .app
        .store()
        .envs()
        .unwrap()
        .iter()
        .flat_map(|e| w.stack.app.store().releases(&e.id).unwrap())
        .map(|r| r.sha)
        .collect();
    assert!(built.is_empty(), "nothing is built: {built:?}");
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "confused"]);
    let reply = w.stack.expect_reply(31, |_| true);
    w.stack.expect_no_reply(31);
    assert!(
        reply.contains(&format!("`/stage {sha2}`")) && reply.contains(sha1.short()),
        "{reply}"
    );

    // `/stage <sha2>` deploys exactly sha2.
    let c = w
        .stack
        .comment("maria", 31, &format!("/stage {}", sha2.short()))
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(31, "fork-race");
    assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
    assert_eq!(w.stack.get(&env.url).await.unwrap().1, sha2.as_str());
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    let pr_record = w.stack.app.store().pr(w.repo(), PrNumber(31)).unwrap();
    assert_eq!(pr_record.approved_sha, Some(sha2));
    w.stack.expect_no_reply(31);
}

/// Settle, and again after deliveries waiting for their retry time became ready.
async fn settle_with_retries(w: &World) {
    for _ in 0..100 {
        w.stack.settle().await.unwrap();
        if w.stack.app.store().pending().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "deliveries still pending: {:#?}",
        w.stack.app.store().pending()
    );
}

/// The comment delivery's record.
fn delivery_of_comment(w: &World) -> stagebot::store::DeliveryRecord {
    w.stack
        .app
        .store()
        .deliveries()
        .unwrap()
        .into_iter()
        .filter(|d| d.event == "issue_comment")
        .max_by_key(|d| d.seq)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_command_comment_runs_10_and_answers_once_even_across_a_retry() {
    let mut w = World::new("").await;
    // This test makes one delivery attempt fail on purpose (and checks it below).
    w._check.1 = true;
    let (_pr, _) = live_pr(&w, 32, "flood").await;
    let generation = w.preview(32, "flood").generation();
    w.stack.expect_no_reply(32);
    w.stack.fake.clear_requests();
    // GitHub rate-limits the reply for longer than the client retries: the delivery fails
    // after every command ran, and the worker retries it.
    w.stack.fake.inject_fault(
        Fault::new(
            &format!("/repos/{}/issues/32/comments", w.repo()),
            5,
            FaultKind::TooMany429 { retry_after_s: 0 },
        )
        .method(Method::POST),
    );
    let body = format!("/stage\n{}", "/status\n".repeat(199));
    w.stack.comment("alice", 32, &body).await.unwrap();
    settle_with_retries(&w).await;

    let d = delivery_of_comment(&w);
    assert_eq!(d.status, DeliveryStatus::Processed, "{d:?}");
    assert_eq!(d.attempts, 1, "exactly one failed attempt: {d:?}");
    // One `/stage` ran once (its forced deploy bumps the generation once), nine `/status`.
    assert_eq!(w.preview(32, "flood").generation(), generation + 1);
    let replies = w.stack.read_replies(32);
    assert_eq!(replies.len(), 1, "one reply: {replies:#?}");
    let reply = &replies[0];
    assert_eq!(reply.matches("### stagebot status").count(), 9, "{reply}");
    assert!(
        reply.contains("this comment has 200 commands") && reply.contains("190 were not run"),
        "{reply}"
    );
    // The reply was refused 5 times (the client's own retries), then posted once; the retry
    // looked for an earlier copy first.
    let posts: Vec<u16> = w
        .stack
        .fake
        .requests_to("POST", &format!("/repos/{}/issues/32/comments", w.repo()))
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(posts, [429, 429, 429, 429, 429, 201]);
    let lookups = w
        .stack
        .fake
        .requests_to("GET", &format!("/repos/{}/issues/32/comments", w.repo()));
    assert_eq!(lookups.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_comment_is_ignored_not_failed() {
    let w = World::new("preview:\n  auto: false\n").await;
    let sha = w.commit("gone", "v1", "preview:\n  auto: false\n");
    let pr = TestPr::new(33, "gone", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let id = w
        .stack
        .fake
        .add_user_comment(w.repo(), PrNumber(33), "alice", "/stage");
    assert!(w.stack.fake.delete_comment(id));
    let mut p = CommentPayload::new(w.repo(), 33, "/stage");
    p.comment_id = id;
    p.author_login = "alice".into();
    p.installation_id = Some(INSTALLATION);
    let (status, _) = w
        .stack
        .send("issue_comment", &payloads::issue_comment(&p))
        .await
        .unwrap();
    assert_eq!(status, 202);
    w.stack.settle().await.unwrap();
    let d = delivery_of_comment(&w);
    match &d.status {
        DeliveryStatus::Ignored { reason } => assert!(reason.contains("deleted"), "{reason}"),
        other => panic!("{other:?}: {d:?}"),
    }
    assert_eq!(d.attempts, 0);
    assert!(w.stack.app.store().envs().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_a_fork_preview_fetches_from_the_base_repository() {
    let w = World::new("").await;
    let base = w.git.clone_url();
    // The fork: another repository with the contributor's commit.
    let (fork, _) = stagebot::testkit::GitRepo::init(
        &w._dir.path().join("fork"),
        &stagebot::testkit::python_app_files(""),
    )
    .unwrap();
    let mut files = stagebot::testkit::python_app_files("");
    files.push(("NOTE.txt", "from the fork".into()));
    let sha = fork.commit("contrib", &files, "contribution").unwrap();
    w.stack.mirror(&sha, &files);
    // GitHub keeps every PR's head in the base repository as refs/pull/<n>/head.
    let out = std::process::Command::new("git")
        .current_dir(w.git.dir())
        .args([
            "fetch",
            "-q",
            &fork.clone_url(),
            "contrib:refs/pull/34/head",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    w.stack.fake.upsert_pr(
        w.repo(),
        FakePr::new(34, "contrib", sha.clone())
            .author("mallory")
            .fork()
            .clone_url(&fork.clone_url()),
    );
    let mut p = PrPayload::new("opened", w.repo(), 34);
    p.head_ref = "contrib".into();
    p.head_sha = sha.to_string();
    p.author_login = "mallory".into();
    p.fork = true;
    p.clone_url = Some(base.clone());
    p.head_clone_url = Some(fork.clone_url());
    p.installation_id = Some(INSTALLATION);
    w.stack
        .send("pull_request", &payloads::pull_request(&p))
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    for body in ["/stage", "/promote"] {
        let id = w
            .stack
            .fake
            .add_user_comment(w.repo(), PrNumber(34), "maria", body);
        let mut c = CommentPayload::new(w.repo(), 34, body);
        c.comment_id = id;
        c.author_login = "maria".into();
        c.clone_url = Some(base.clone());
        c.installation_id = Some(INSTALLATION);
        w.stack
            .send("issue_comment", &payloads::issue_comment(&c))
            .await
            .unwrap();
        w.stack.settle().await.unwrap();
    }
    let preview = w.preview(34, "contrib");
    assert_eq!(
        preview.clone_url,
        fork.clone_url(),
        "a fork's preview builds the fork"
    );
    let staging = w.env("staging");
    assert_eq!(staging.state(), EnvState::Live, "{:?}", staging.last_error);
    assert_eq!(
        staging.clone_url, base,
        "staging fetches from the base repository"
    );
    assert!(!staging.fork);
    assert_eq!(w.stack.get(&staging.url).await.unwrap().1, sha.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_github_accepted_but_whose_answer_was_lost_is_not_posted_again() {
    let mut w = World::new("").await;
    // This test makes one delivery attempt fail on purpose (and checks it below).
    w._check.1 = true;
    let (_pr, _) = live_pr(&w, 35, "lost").await;
    w.stack.expect_no_reply(35);
    w.stack.fake.inject_fault(
        Fault::new(
            &format!("/repos/{}/issues/35/comments", w.repo()),
            1,
            FaultKind::ServedThen502,
        )
        .method(Method::POST),
    );
    w.stack
        .comment("alice", 35, "/status\n/help")
        .await
        .unwrap();
    settle_with_retries(&w).await;
    let d = delivery_of_comment(&w);
    assert_eq!(
        (&d.status, d.attempts),
        (&DeliveryStatus::Processed, 1),
        "{d:?}"
    );
    let replies = w.stack.read_replies(35);
    assert_eq!(replies.len(), 1, "{replies:#?}");
    let reply = &replies[0];
    assert!(
        reply.contains("### stagebot status") && reply.contains("**stagebot commands**"),
        "{reply}"
    );
}
