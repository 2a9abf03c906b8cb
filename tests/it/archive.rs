//! Destroyed environments out of the hot path and disk bounded by the retention (issue 13):
//! a closed PR's preview is archived (out of every scan of live environments, still readable,
//! still on the sticky comment) and comes back with its history when the PR is reopened;
//! the periodic pruning removes, with real files, what the retention no longer covers and
//! nothing a live environment uses.

use std::path::Path;

use stagebot::environment::EnvState;
use stagebot::slug::preview_slug;
use stagebot::testkit::TestPr;
use stagebot::types::{EnvId, PrNumber};

use crate::flows::World;

fn preview_id(w: &World, n: u64, branch: &str) -> EnvId {
    EnvId {
        repo: w.repo().clone(),
        slug: preview_slug(Some(PrNumber(n)), branch),
    }
}

async fn open(w: &World, n: u64, branch: &str) -> TestPr {
    let sha = w.commit(branch, &format!("{branch} v1"), "");
    let pr = TestPr::new(n, branch, sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(n, branch).state(), EnvState::Live);
    pr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_prs_preview_is_archived_and_a_reopened_pr_brings_it_back() {
    let w = World::new("").await;
    let store = w.stack.app.store().clone();
    let mut pr = open(&w, 7, "feature/login").await;
    let id = preview_id(&w, 7, "feature/login");
    w.stack.close_pr(&mut pr, false).await.unwrap();
    w.stack.settle().await.unwrap();
    // Destroyed and reported: archived, out of every scan of live environments.
    let gone = w.preview(7, "feature/login");
    assert_eq!(gone.state(), EnvState::Destroyed);
    assert!(!gone.report_pending);
    assert!(store.envs().unwrap().iter().all(|e| e.id != id));
    assert!(store.envs_of_repo(w.repo()).unwrap().is_empty());
    assert_eq!(store.archived_env(&id).unwrap().unwrap().env, gone);
    // History stays readable: the sticky comment's row, the admin listing.
    let sticky = w.stack.sticky(7).unwrap();
    assert!(sticky.contains("removed"), "{sticky}");
    assert!(store.all_envs().unwrap().iter().any(|e| e.id == id));
    // Reopened: the same environment comes back, its releases numbered on.
    w.stack.pr_event("reopened", &pr, None).await.unwrap();
    w.stack.settle().await.unwrap();
    let back = w.preview(7, "feature/login");
    assert_eq!(back.state(), EnvState::Live, "{:?}", back.last_error);
    assert_eq!(back.current_release(), Some(2));
    assert!(store.archived_env(&id).unwrap().is_none());
    assert_eq!(store.envs_of_repo(w.repo()).unwrap(), vec![back.clone()]);
    let (status, body) = w.stack.get(&back.url).await.unwrap();
    assert_eq!((status, body.as_str()), (200, pr.sha.as_str()));
}

fn exists(p: &Path) -> bool {
    p.try_exists().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_what_the_retention_no_longer_covers_and_nothing_live() {
    let w = World::new("").await;
    let app = &w.stack.app;
    let data = app.settings().data_dir.clone();
    let repo = w.repo().clone();
    let logs = data.join("logs").join(repo.owner()).join(repo.name());
    let cache = data
        .join("repos")
        .join(repo.owner())
        .join(format!("{}.git", repo.name()));
    // PR 7 stays live with two releases; PR 8 is closed (archived).
    let mut seven = open(&w, 7, "seven").await;
    let sha2 = w.commit("seven", "seven v2", "");
    w.stack.synchronize(&mut seven, sha2).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(7, "seven").current_release(), Some(2));
    let mut eight = open(&w, 8, "eight").await;
    w.stack.close_pr(&mut eight, false).await.unwrap();
    w.stack.settle().await.unwrap();
    let seven_id = preview_id(&w, 7, "seven");
    let eight_id = preview_id(&w, 8, "eight");
    let seven_logs = logs.join(seven_id.slug.as_str());
    let eight_logs = logs.join(eight_id.slug.as_str());
    assert!(exists(&seven_logs.join("1.log")) && exists(&seven_logs.join("2.log")));
    assert!(exists(&eight_logs.join("1.log")));
    assert!(exists(&cache.join("HEAD")));
    // Left behind by environments stagebot no longer knows of: a log dir and a checkout.
    let stray_logs = logs.join("pr-99-stray");
    std::fs::create_dir_all(&stray_logs).unwrap();
    std::fs::write(stray_logs.join("1.log"), "old").unwrap();
    let stray_checkout = data
        .join("envs")
        .join(repo.owner())
        .join(repo.name())
        .join("pr-99-stray");
    std::fs::create_dir_all(stray_checkout.join("r1")).unwrap();
    // And a cache of a repository without environments.
    let other_cache = data.join("repos").join("acme").join("gone.git");
    std::fs::create_dir_all(&other_cache).unwrap();
    std::fs::write(other_cache.join("HEAD"), "ref: refs/heads/main\n").unwrap();

    // Inside the retention: nothing goes.
    let now = chrono::Utc::now();
    let p = stagebot::prune::prune_disk(app, now - chrono::Duration::days(1))
        .await
        .unwrap();
    assert!(p.is_empty(), "{p:?}");
    assert!(exists(&eight_logs.join("1.log")) && exists(&stray_logs) && exists(&other_cache));

    // Past it (every file is older than this cutoff).
    let later = now + chrono::Duration::days(1);
    let p = stagebot::prune::prune_disk(app, later).await.unwrap();
    assert_eq!(p.environments, 1, "{p:?}");
    assert_eq!((p.env_dirs, p.repo_caches), (1, 1), "{p:?}");
    // The archived environment went with its history and logs.
    let store = app.store();
    assert!(store.env(&eight_id).unwrap().is_none());
    assert!(store.releases(&eight_id).unwrap().is_empty());
    assert!(!exists(&eight_logs));
    assert!(!exists(&stray_logs) && !exists(&stray_checkout) && !exists(&other_cache));
    // The live one keeps its record, its live release's log, its checkout and the cache.
    let live = w.preview(7, "seven");
    assert_eq!(live.state(), EnvState::Live);
    assert_eq!(store.releases(&seven_id).unwrap().len(), 2);
    assert!(exists(&seven_logs.join("2.log")));
    assert!(!exists(&seven_logs.join("1.log")), "an older release's log");
    assert!(exists(&cache.join("HEAD")));
    let (status, _) = w.stack.get(&live.url).await.unwrap();
    assert_eq!(status, 200);
    // It still deploys from that cache.
    let sha3 = w.commit("seven", "seven v3", "");
    w.stack.synchronize(&mut seven, sha3.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&live.url).await.unwrap().1, sha3.as_str());

    // Once no environment of the repository is live, its cache goes too; a reopened PR
    // deploys again from a fresh one.
    w.stack.close_pr(&mut seven, false).await.unwrap();
    w.stack.settle().await.unwrap();
    let p = stagebot::prune::prune_disk(app, later).await.unwrap();
    assert_eq!((p.environments, p.repo_caches), (1, 1), "{p:?}");
    assert!(!exists(&cache) && !exists(&seven_logs));
    w.stack.pr_event("reopened", &seven, None).await.unwrap();
    w.stack.settle().await.unwrap();
    let back = w.preview(7, "seven");
    assert_eq!(back.state(), EnvState::Live, "{:?}", back.last_error);
    assert_eq!(back.current_release(), Some(1), "a new history");
    assert!(exists(&cache.join("HEAD")));
}
