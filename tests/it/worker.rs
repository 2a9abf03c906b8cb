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
