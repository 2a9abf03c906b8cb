//! Catch-up from GitHub's delivery log (src/catchup.rs): deliveries GitHub "sent" while
//! stagebot was down are redelivered and processed after the start with no operator action;
//! `ping`, 4xx-answered and pre-horizon deliveries never are; a pass with nothing new makes one
//! call; passes are bounded, oldest first, and read only what is new.

use std::time::Duration;

use serde_json::json;
use stagebot::environment::EnvState;
use stagebot::fake_github::FakeGitHub;
use stagebot::store::DeliveryStatus;
use stagebot::testkit::{INSTALLATION, Stack, StackOptions, TestPr};
use stagebot::types::{DeliveryId, PrNumber, RepoName};

use crate::flows::{self, World};
use crate::support::eventually;

fn attempts_requested(fake: &FakeGitHub) -> Vec<String> {
    fake.requests_to("POST", "/app/hook/deliveries/")
        .into_iter()
        .map(|r| r.path)
        .collect()
}

/// GitHub's `delivered_at` has whole seconds and a delivery in the horizon's own second counts
/// as older than the store: wait for the next second before GitHub "sends" anything.
async fn next_second() {
    let ms = 1000 - u64::from(chrono::Utc::now().timestamp_subsec_millis());
    tokio::time::sleep(Duration::from_millis(ms + 50)).await;
}

fn check_run(n: u64) -> serde_json::Value {
    json!({
        "action": "created",
        "check_run": { "id": n, "name": "ci" },
        "repository": { "id": 1, "full_name": "acme/webapp", "name": "webapp", "owner": { "login": "acme" } },
        "installation": { "id": INSTALLATION },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_sent_while_stagebot_was_down_is_redelivered_and_processed_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::with("", |o| o.data_dir = dir.path().join("data")).await;
    let sha1 = w.commit("lost-push", "v1", "");
    let mut pr = TestPr::new(70, "lost-push", sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let url = w.preview(70, "lost-push").url;
    assert_eq!(w.stack.get(&url).await.unwrap(), (200, sha1.to_string()));
    let addr = w.stack.addr;
    let sha2 = w.commit("lost-push", "v2", "");
    // The `synchronize` GitHub will try to send while stagebot is down.
    let before = std::mem::replace(&mut pr.sha, sha2.clone());
    let payload = w.stack.pr_payload("synchronize", &pr, Some(&before));
    let flows::World { stack, _check, .. } = w;
    drop(_check);
    let fake = stack.stop().await;

    // While stagebot is down (in a later second than the store's creation: GitHub's times have
    // whole seconds): a push to the PR (GitHub could not connect), a ping, and a delivery
    // stagebot had refused with 401 (a bad signature stays refused).
    next_second().await;
    fake.set_pr_head(
        &RepoName::new("acme", "webapp").unwrap(),
        PrNumber(70),
        sha2.clone(),
    );
    let lost = fake.record_failed_delivery("pull_request", &payload);
    fake.record_failed_delivery(
        "ping",
        &json!({ "zen": "Keep it logically awesome.", "hook_id": 1 }),
    );
    let refused = stagebot::fake_github::new_guid();
    fake.record_delivery(&refused, "check_run", &check_run(1), 401);

    let mut opts = StackOptions::new(&dir.path().join("data"));
    opts.listen = Some(addr);
    let stack = Stack::start_with(fake, opts).await.unwrap();
    let store = stack.app.store().clone();
    let lost_id = DeliveryId::new(&lost).unwrap();
    eventually(
        "the lost delivery to be redelivered",
        Duration::from_secs(30),
        || store.delivery(&lost_id).unwrap().is_some(),
    )
    .await;
    stack.settle().await.unwrap();

    let record = store.delivery(&lost_id).unwrap().unwrap();
    assert!(record.recovered, "{record:?}");
    assert_eq!(record.status, DeliveryStatus::Processed, "{record:?}");
    assert_eq!(store.recovered_total().unwrap(), 1);
    let env = store
        .env(&stagebot::types::EnvId {
            repo: stack.repo.clone(),
            slug: stagebot::slug::preview_slug(Some(PrNumber(70)), "lost-push"),
        })
        .unwrap()
        .unwrap();
    assert_eq!(env.state(), EnvState::Live);
    assert_eq!(
        env.current_release(),
        Some(2),
        "the lost push is a new release"
    );
    assert_eq!(stack.get(&url).await.unwrap(), (200, sha2.to_string()));

    // Exactly one redelivery was requested: the lost push, not the ping nor the refused one.
    let log = stack.fake.hook_deliveries();
    let lost_entry = log
        .iter()
        .find(|d| d.guid == lost && !d.redelivery)
        .unwrap();
    assert_eq!(
        attempts_requested(&stack.fake),
        [format!("/app/hook/deliveries/{}/attempts", lost_entry.id)]
    );
    assert!(
        store
            .delivery(&DeliveryId::new(&refused).unwrap())
            .unwrap()
            .is_none()
    );
    let redelivered: Vec<_> = log.iter().filter(|d| d.redelivery).collect();
    assert_eq!(redelivered.len(), 1, "{log:#?}");
    assert_eq!(
        (redelivered[0].guid.as_str(), redelivered[0].status_code),
        (lost.as_str(), 202)
    );

    // The metric shows it.
    let metrics = reqwest::get(format!("{}/metrics", stack.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stagebot_deliveries_recovered_total 1"),
        "{metrics}"
    );
    // So do the dashboard and its JSON API.
    let api: serde_json::Value = reqwest::get(format!("{}/api/deliveries", stack.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api, json!({ "recovered_total": 1 }));
    let page = reqwest::get(stack.url())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("1 lost webhook delivery recovered from GitHub's delivery log"),
        "{page}"
    );

    // Everything is caught up: the next pass asks for nothing and reads one page.
    stack.fake.clear_requests();
    let s = stack.app.catch_up().await.unwrap();
    assert_eq!((s.requested, s.missing, s.backlog), (0, 0, 0), "{s:?}");
    assert!(attempts_requested(&stack.fake).is_empty());
    drop(store);
    stack.stop().await;

    // `stagebot deliveries list` marks it and counts it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stagebot"))
        .args(["deliveries", "list"])
        .env_clear()
        .env("STAGEBOT_DATA_DIR", dir.path().join("data"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    let line = listed
        .lines()
        .find(|l| l.contains(&lost))
        .unwrap_or_else(|| panic!("{lost} not listed:\n{listed}"));
    assert!(line.contains(" yes "), "{line}");
    assert!(
        listed.contains("recovered from GitHub's delivery log since the store was created: 1"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_pass_with_nothing_new_makes_exactly_one_api_call() {
    let w = World::new("").await;
    next_second().await;
    let sha = w.commit("quiet", "v1", "");
    w.stack
        .open_pr(&TestPr::new(71, "quiet", sha, &w.git.clone_url()))
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    // The start-up pass ran before the PR; this one reads the PR's delivery (stored: nothing to
    // ask for) and moves the cursor.
    let s = w.stack.app.catch_up().await.unwrap();
    assert_eq!((s.read, s.requested), (1, 0), "{s:?}");

    w.stack.fake.clear_requests();
    let s = w.stack.app.catch_up().await.unwrap();
    assert_eq!((s.pages, s.read, s.requested), (1, 0, 0), "{s:?}");
    let calls: Vec<_> = w
        .stack
        .fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.query))
        .collect();
    assert_eq!(
        calls,
        [(
            "GET".to_owned(),
            "/app/hook/deliveries".to_owned(),
            Some("per_page=100".to_owned())
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_are_bounded_oldest_first_and_read_only_what_is_new() {
    let w = World::new("").await;
    next_second().await;
    let fake = w.stack.fake.clone();
    // 25 lost deliveries (more than one pass asks for) behind 101 failed pings (more than one
    // page of the log; pings are never requested).
    let lost: Vec<String> = (0..25)
        .map(|n| fake.record_failed_delivery("check_run", &check_run(n)))
        .collect();
    for _ in 0..101 {
        fake.record_failed_delivery("ping", &json!({ "zen": "z", "hook_id": 1 }));
    }
    let ids: Vec<u64> = fake
        .hook_deliveries()
        .iter()
        .filter(|d| d.event == "check_run")
        .map(|d| d.id)
        .collect();
    let attempt = |id: &u64| format!("/app/hook/deliveries/{id}/attempts");

    fake.clear_requests();
    let s = w.stack.app.catch_up().await.unwrap();
    assert_eq!(s.pages, 2, "{s:?}");
    assert_eq!(
        (s.missing, s.requested, s.backlog),
        (25, stagebot::catchup::REDELIVERIES_PER_PASS, 5)
    );
    let first: Vec<String> = ids[..20].iter().map(attempt).collect();
    assert_eq!(attempts_requested(&fake), first, "oldest first");

    let store = w.stack.app.store().clone();
    eventually("the first 20 redeliveries", Duration::from_secs(30), || {
        fake.hook_deliveries()
            .iter()
            .filter(|d| d.redelivery)
            .count()
            == 20
    })
    .await;
    fake.clear_requests();
    let s = w.stack.app.catch_up().await.unwrap();
    // Only the 20 redelivery entries are new; the backlog's 5 are asked for now.
    assert_eq!(
        (s.pages, s.read, s.missing, s.requested, s.backlog),
        (1, 20, 0, 5, 0),
        "{s:?}"
    );
    let rest: Vec<String> = ids[20..].iter().map(attempt).collect();
    assert_eq!(attempts_requested(&fake), rest);
    eventually(
        "every lost delivery to arrive",
        Duration::from_secs(30),
        || {
            lost.iter().all(|g| {
                store
                    .delivery(&DeliveryId::new(g).unwrap())
                    .unwrap()
                    .is_some()
            })
        },
    )
    .await;
    w.stack.settle().await.unwrap();
    assert_eq!(store.recovered_total().unwrap(), 25);
    let recovered = store
        .deliveries()
        .unwrap()
        .into_iter()
        .filter(|d| d.recovered)
        .count();
    assert_eq!(recovered, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_from_before_a_new_store_is_replayed() {
    let fake = FakeGitHub::start().await;
    let repo = RepoName::new("acme", "webapp").unwrap();
    fake.add_installation(INSTALLATION, "acme");
    fake.add_repo(&repo, "main", INSTALLATION);
    // GitHub's log holds deliveries from before this data dir existed: one failed, one
    // delivered (to a store that is gone).
    fake.record_failed_delivery("check_run", &check_run(1));
    fake.record_delivery(
        &stagebot::fake_github::new_guid(),
        "check_run",
        &check_run(2),
        202,
    );
    next_second().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_with(fake, StackOptions::new(&dir.path().join("data")))
        .await
        .unwrap();
    let s = stack.app.catch_up().await.unwrap();
    assert_eq!((s.missing, s.requested), (0, 0), "{s:?}");
    assert!(attempts_requested(&stack.fake).is_empty());
    assert!(stack.app.store().deliveries().unwrap().is_empty());

    // A delivery lost after the store exists is requested, even one GitHub saw answered 2xx
    // (a store restored from an older backup lost it; here: it never reached the store).
    next_second().await;
    let after = stagebot::fake_github::new_guid();
    stack
        .fake
        .record_delivery(&after, "check_run", &check_run(3), 200);
    let s = stack.app.catch_up().await.unwrap();
    assert_eq!((s.missing, s.requested), (1, 1), "{s:?}");
    stack.stop().await;
}

#[tokio::test]
async fn a_restored_store_starts_the_horizon_afresh_and_marks_requested_arrivals() {
    use stagebot::store::{CatchupRequest, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a")).unwrap();
    let old = chrono::Utc::now() - chrono::Duration::days(2);
    let mut state = store.catchup().unwrap();
    state.horizon = old;
    state.cursor = Some(42);
    store.put_catchup(&state).unwrap();
    // A requested redelivery arrives: marked recovered, counted; an ordinary delivery is not.
    let requested = DeliveryId::new("aaaaaaaa-0000-4000-8000-000000000001").unwrap();
    let ordinary = DeliveryId::new("aaaaaaaa-0000-4000-8000-000000000002").unwrap();
    store
        .put_catchup_request(
            &requested,
            &CatchupRequest {
                requests: 1,
                last_at: chrono::Utc::now(),
            },
        )
        .await
        .unwrap();
    let now = chrono::Utc::now();
    store
        .insert_delivery(&requested, "push", b"{}", now)
        .await
        .unwrap();
    store
        .insert_delivery(&ordinary, "push", b"{}", now)
        .await
        .unwrap();
    assert!(store.delivery(&requested).unwrap().unwrap().recovered);
    assert!(!store.delivery(&ordinary).unwrap().unwrap().recovered);
    assert_eq!(store.catchup_requests(&requested).unwrap(), None);
    assert_eq!(store.recovered_total().unwrap(), 1);

    let backup = dir.path().join("backup.json");
    store.backup(&backup).unwrap();
    store.restore(&backup, true).unwrap();
    let state = store.catchup().unwrap();
    assert_eq!(state.cursor, None);
    assert!(state.horizon > old + chrono::Duration::days(1), "{state:?}");
}
