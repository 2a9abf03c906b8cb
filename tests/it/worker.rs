//! The worker's scheduling: deliveries of different repositories are processed concurrently, so
//! a repository whose GitHub calls are slow does not hold up another repository's preview.

use std::time::{Duration, Instant};

use stagebot::environment::EnvState;
use stagebot::event::payloads::{self, PrPayload};
use stagebot::fake_github::{Fault, FaultKind};
use stagebot::slug::preview_slug;
use stagebot::testkit::{INSTALLATION, TestPr};
use stagebot::types::{EnvId, PrNumber, RepoName};

use crate::flows::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_repository_does_not_delay_another_repositorys_preview() {
    let w = World::new("").await;
    let slow = RepoName::new("acme", "slow").unwrap();
    w.stack.fake.add_repo(&slow, "main", INSTALLATION);
    // Every GitHub call about the slow repository takes 20 s.
    w.stack.fake.inject_fault(Fault::new(
        "/repos/acme/slow/",
        1_000,
        FaultKind::Delay { ms: 20_000 },
    ));
    let mut p = PrPayload::new("opened", &slow, 1);
    p.head_ref = "feature/slow".into();
    p.head_sha = w.main_sha.to_string();
    p.clone_url = Some(w.git.clone_url());
    p.installation_id = Some(INSTALLATION);
    let (status, _) = w
        .stack
        .send("pull_request", &payloads::pull_request(&p))
        .await
        .unwrap();
    assert_eq!(status, 202);
    // Let the worker pick the slow delivery up first.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sha = w.commit("feature/fast", "fast", "");
    let pr = TestPr::new(2, "feature/fast", sha.clone(), &w.git.clone_url());
    let sent = Instant::now();
    w.stack.open_pr(&pr).await.unwrap();
    let fast = EnvId {
        repo: w.repo().clone(),
        slug: preview_slug(Some(PrNumber(2)), "feature/fast"),
    };
    let live = wait_live(&w, &fast, Duration::from_secs(15)).await;
    assert!(
        live,
        "the fast repository's preview was not live within 15 s: it waited for the slow one"
    );
    let elapsed = sent.elapsed();
    let (code, body) = w
        .stack
        .get(&w.preview(2, "feature/fast").url)
        .await
        .unwrap();
    assert_eq!((code, body.as_str()), (200, sha.as_str()));

    // The control: the slow repository's delivery really was held up all that time.
    let slow_pending = w
        .stack
        .app
        .store()
        .pending()
        .unwrap()
        .into_iter()
        .any(|d| d.event == "pull_request");
    assert!(
        slow_pending,
        "the slow repository's delivery finished already ({elapsed:?}): the delay did not apply"
    );
    eprintln!(
        "measure: fast preview live {elapsed:?} after its webhook, beside a 20 s-slow repository"
    );
    w.stack.fake.clear_faults();
}

async fn wait_live(w: &World, id: &EnvId, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(env)) = w.stack.app.store().env(id)
            && env.state() == EnvState::Live
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Issue 13: the worker's outcomes share the group commit. Twenty `labeled` deliveries (decided
/// without GitHub) wait in the inbox; one drain processes them all and makes their outcomes
/// durable with ONE flush, not one per delivery (counted, not timed). Losing such an outcome in
/// a crash only means the delivery is processed again: `ingress::kill_9_during_a_burst_…`
/// checks that this duplicates nothing.
/// The app without its server: no worker of its own runs, the test drives it.
async fn bare_app() -> (
    tempfile::TempDir,
    stagebot::fake_github::FakeGitHub,
    stagebot::app::App,
) {
    use stagebot::app::{App, Parts, Settings};
    use stagebot::store::Store;
    // The app without its server: no worker of its own runs, this test's drain is the only one.
    let dir = tempfile::tempdir().unwrap();
    let fake = stagebot::fake_github::FakeGitHub::start().await;
    let routes = stagebot::proxy::Routes::default();
    let app = App::new(Parts {
        settings: Settings::new(
            dir.path().to_path_buf(),
            "http://127.0.0.1:9".into(),
            "localhost:9".into(),
        ),
        store: Store::open(dir.path()).unwrap(),
        github: stagebot::github::GitHub::new(fake.github_config()).unwrap(),
        provider: stagebot::provider::Provider::Local(
            stagebot::provider::local::LocalProvider::new(
                stagebot::provider::local::LocalConfig::new(
                    dir.path().to_path_buf(),
                    routes.clone(),
                ),
            )
            .unwrap(),
        ),
        routes,
        clock: std::sync::Arc::new(stagebot::clock::SystemClock),
        secrets: stagebot::webhook::WebhookSecrets::parse("s").unwrap(),
    });
    (dir, fake, app)
}

/// 20 `labeled` deliveries of PR #7 of `repo` in the inbox (ids `<prefix>-<n>`), the worker
/// decides them without calling GitHub.
async fn labeled_deliveries(
    app: &stagebot::app::App,
    repo: &RepoName,
    prefix: &str,
) -> (PrPayload, Vec<stagebot::types::DeliveryId>) {
    let mut p = PrPayload::new("labeled", repo, 7);
    p.installation_id = Some(INSTALLATION);
    p.label = Some("needs review".into());
    let body = serde_json::to_vec(&payloads::pull_request(&p)).unwrap();
    let ids: Vec<_> = (0..20)
        .map(|n| stagebot::types::DeliveryId::new(&format!("{prefix}-{n}")).unwrap())
        .collect();
    for id in &ids {
        app.store()
            .insert_delivery(id, "pull_request", &body, app.now())
            .await
            .unwrap();
    }
    (p, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_makes_its_outcomes_durable_with_one_flush() {
    use stagebot::store::DeliveryStatus;
    let (_dir, _fake, app) = bare_app().await;
    let repo = RepoName::new("acme", "labels").unwrap();
    let store = app.store();
    let (p, ids) = labeled_deliveries(&app, &repo, "label").await;
    let before = store.flushes();
    let attempted = app.drain().await.unwrap();
    assert_eq!(attempted, 20);
    assert_eq!(
        store.flushes() - before,
        1,
        "one flush covers the drain's 20 outcomes"
    );
    for id in &ids {
        let r = store.delivery(id).unwrap().unwrap();
        assert!(
            matches!(r.status, DeliveryStatus::Ignored { .. }),
            "{id}: {:?} {:?}",
            r.status,
            r.last_error
        );
    }
    assert!(store.pending().unwrap().is_empty());
    // The PR's head is recorded without a flush of its own; the same head announced by all 20
    // is kept once (it changes no answer of `head_before`).
    let pr = store.pr(&repo, PrNumber(7)).unwrap();
    assert_eq!(pr.heads.len(), 1, "{pr:?}");
    assert_eq!(
        pr.head_before(None).map(|s| s.as_str()),
        Some(p.head_sha.as_str()),
        "{pr:?}"
    );
}

/// The running worker leaves its outcomes to the front door's next group commit, and flushes
/// them itself once none came: 20 deliveries processed, then exactly one flush of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_worker_flushes_its_outcomes_once_when_no_group_commit_covers_them() {
    use stagebot::store::DeliveryStatus;
    let (_dir, _fake, app) = bare_app().await;
    let repo = RepoName::new("acme", "labels").unwrap();
    let store = app.store();
    let (_, ids) = labeled_deliveries(&app, &repo, "run").await;
    let (trigger, shutdown) = stagebot::shutdown::shutdown();
    let worker = tokio::spawn(app.clone().run_worker(shutdown));
    app.wake_worker();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.pending().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the worker did not process the deliveries"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let processed = store.flushes();
    // Its own flush comes after the delay; nothing else flushes here.
    tokio::time::sleep(stagebot::worker::OUTCOMES_FLUSH_DELAY * 5).await;
    assert_eq!(
        store.flushes() - processed,
        1,
        "one flush covers the outcomes once the front door made none"
    );
    for id in &ids {
        let r = store.delivery(id).unwrap().unwrap();
        assert!(
            matches!(r.status, DeliveryStatus::Ignored { .. }),
            "{id}: {:?}",
            r.status
        );
    }
    trigger.fire();
    worker.await.unwrap();
}
