//! The test harness itself: a bot reply no test read fails the test (as in bors's tester), so
//! an extra or duplicated reply cannot pass; the sticky comment is never an unread reply.

use std::panic::{AssertUnwindSafe, catch_unwind};

use stagebot::testkit::{INSTALLATION, Stack, StackOptions, TestPr};
use stagebot::types::{Permission, Sha};

/// A stack with PR #5 open (its sticky comment posted) and no preview (on demand).
async fn stack_with_pr(dir: &std::path::Path) -> Stack {
    let stack = Stack::start(StackOptions::new(&dir.join("data")))
        .await
        .unwrap();
    let config = "start: exec true\npreview:\n  auto: false\n";
    stack.mirror_ref("main", &[(".github/stagebot.yml", config)]);
    stack.grant("alice", Permission::Write);
    let sha = Sha::new(&"a".repeat(40)).unwrap();
    let pr = TestPr::new(5, "feature", sha, "file:///nonexistent");
    stack.open_pr(&pr).await.unwrap();
    stack.settle().await.unwrap();
    stack
}

/// The panic message of `f`, which must panic.
fn panic_of(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Post `body` on PR #5 as the app (what a duplicated reply looks like on GitHub).
async fn post_as_app(stack: &Stack, body: &str) {
    let token = stack
        .app
        .github()
        .installation_token(INSTALLATION)
        .await
        .unwrap();
    let status = reqwest::Client::new()
        .post(format!(
            "{}/repos/{}/issues/5/comments",
            stack.fake.url(),
            stack.repo
        ))
        .header("Authorization", format!("token {}", token.expose()))
        .header("User-Agent", "stagebot-test")
        .json(&serde_json::json!({ "body": body }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_left_unread_fails_the_test_and_the_sticky_comment_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack_with_pr(dir.path()).await;
    // The sticky comment is there, and it is not a reply.
    assert!(stack.sticky(5).unwrap().contains("on demand"));
    assert!(stack.unread_replies().is_empty());

    stack.comment("alice", 5, "/status").await.unwrap();
    stack.settle().await.unwrap();
    let unread = stack.unread_replies();
    assert_eq!(unread.len(), 1, "{unread:#?}");
    assert_eq!((unread[0].0.as_str(), unread[0].1), ("acme/webapp", 5));
    // `replies` shows it without reading it.
    assert_eq!(stack.replies(5).len(), 1);
    assert_eq!(stack.unread_replies().len(), 1);
    let message = panic_of(|| drop(stack));
    assert!(
        message.contains("1 bot reply was never read") && message.contains("### stagebot status"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_reply_fails_the_test() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack_with_pr(dir.path()).await;
    stack.comment("alice", 5, "/status").await.unwrap();
    stack.settle().await.unwrap();
    let reply = stack.expect_reply(5, |t| t.contains("### stagebot status"));
    stack.expect_no_reply(5);

    // The same reply a second time (what a retry that did not find its first copy would post).
    post_as_app(&stack, &reply).await;
    let message = panic_of(|| stack.expect_no_reply(5));
    assert!(
        message.contains("expected no new bot reply on #5, found 1"),
        "{message}"
    );
    // A check that does not match fails too, and the reply then counts as read.
    let message = panic_of(|| {
        stack.expect_reply(5, |t| t.contains("something else"));
    });
    assert!(message.contains("unexpected bot reply on #5"), "{message}");
    assert_eq!(stack.next_reply(5), None);
    let message = panic_of(|| {
        stack.expect_reply(5, |_| true);
    });
    assert!(message.contains("found no unread reply"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_posted_before_a_restart_belong_to_the_stack_that_saw_them() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack_with_pr(dir.path()).await;
    stack.comment("alice", 5, "/help").await.unwrap();
    stack.settle().await.unwrap();
    // Stopping with the reply unread fails.
    let fake = stack.fake.clone();
    let message = panic_of(|| {
        stop_blocking(stack);
    });
    assert!(message.contains("**stagebot commands**"), "{message}");
    // A stack started on the same fake answers only for what it posts itself.
    let stack = Stack::start_with(fake, StackOptions::new(&dir.path().join("data2")))
        .await
        .unwrap();
    assert!(stack.unread_replies().is_empty());
    assert_eq!(stack.replies(5).len(), 1);
    stack.stop().await;
}

/// `Stack::stop` from synchronous code (inside `catch_unwind`).
fn stop_blocking(stack: Stack) {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        handle.block_on(async {
            stack.stop().await;
        })
    });
}
