//! The release pipeline end to end (issue 10): `on_merge: staging` with promotion of a merged
//! pull request, and branch environments. Real server, worker, store, local provider and
//! processes; the fake GitHub over HTTP.

use stagebot::slug::preview_slug;
use stagebot::store::{EnvState, Trigger};
use stagebot::testkit::{TestPr, python_app_files};
use stagebot::types::{PrNumber, Sha, Slug};

use crate::flows::World;

const STAGING_ON_MERGE: &str = "on_merge: staging\n";

/// Merge PR `pr` (whose branch is `branch`) into main and push main; returns the merge commit.
async fn merge(w: &World, pr: &mut TestPr, branch: &str, extra_config: &str) -> Sha {
    let merge = w.git.merge(branch).unwrap();
    w.stack.mirror(&merge, &python_app_files(extra_config));
    pr.merge_sha = Some(merge.clone());
    w.stack.close_pr(pr, true).await.unwrap();
    w.stack
        .push("main", &w.main_sha, &merge, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    merge
}

fn has_env(w: &World, slug: &str) -> bool {
    w.stack
        .app
        .store()
        .envs()
        .unwrap()
        .iter()
        .any(|e| e.id.slug.as_str() == slug)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_merge_staging_then_promote_the_merged_pr_to_production() {
    let w = World::new(STAGING_ON_MERGE).await;
    let sha = w.commit("feature/pay", "v1", STAGING_ON_MERGE);
    let mut pr = TestPr::new(5, "feature/pay", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let merge = merge(&w, &mut pr, "feature/pay", STAGING_ON_MERGE).await;

    // the merge deploys staging with the merge commit; production is untouched
    let staging = w.env("staging");
    assert_eq!(staging.state, EnvState::Live, "{:?}", staging.last_error);
    assert_eq!(
        w.stack.get(&staging.url).await.unwrap(),
        (200, merge.to_string())
    );
    let releases = w.stack.app.store().releases(&staging.id).unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].trigger, Trigger::Merge);
    assert!(!has_env(&w, "production"));
    assert!(w.stack.fake.deployments(w.repo(), "production").is_empty());

    // a writer may not promote production
    let c = w
        .stack
        .comment("alice", 5, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "confused"]);
    assert!(w.stack.replies(5).last().unwrap().contains("maintain"));
    assert!(!has_env(&w, "production"));

    // a maintainer promotes exactly the merge commit, from staging's release
    let c = w
        .stack
        .comment("maria", 5, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    let prod = w.env("production");
    assert_eq!(prod.state, EnvState::Live, "{:?}", prod.last_error);
    assert_eq!(
        w.stack.get(&prod.url).await.unwrap(),
        (200, merge.to_string())
    );
    let releases = w.stack.app.store().releases(&prod.id).unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].sha, merge);
    assert_eq!(releases[0].by, "maria");
    assert_eq!(
        releases[0].trigger,
        Trigger::Promote {
            from: Slug::staging(),
            release: Some(1)
        }
    );
    assert_eq!(releases[0].pr, Some(PrNumber(5)));
    // staging still runs it
    assert_eq!(
        w.stack.get(&staging.url).await.unwrap(),
        (200, merge.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_of_a_merged_pr_says_what_staging_runs_when_it_is_another_commit() {
    let w = World::new(STAGING_ON_MERGE).await;
    let sha = w.commit("one", "one", STAGING_ON_MERGE);
    let mut one = TestPr::new(6, "one", sha, &w.git.clone_url());
    w.stack.open_pr(&one).await.unwrap();
    w.stack.settle().await.unwrap();
    let first = merge(&w, &mut one, "one", STAGING_ON_MERGE).await;
    // a later push to main moves staging on
    let later = w.commit("main", "later", STAGING_ON_MERGE);
    w.stack
        .push("main", &first, &later, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(
        w.stack.get(&w.env("staging").url).await.unwrap().1,
        later.as_str()
    );
    let c = w
        .stack
        .comment("maria", 6, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "confused"]);
    let reply = w.stack.replies(6).last().unwrap().clone();
    assert!(
        reply.contains(&format!("staging runs `{}`", later.short()))
            && reply.contains(first.short()),
        "{reply}"
    );
    assert!(!has_env(&w, "production"));
}

const BRANCHES: &str = "branches: [\"release/*\", \"qa/**\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_environments_follow_matching_branches() {
    let w = World::new(BRANCHES).await;
    let zero = Sha::new(&"0".repeat(40)).unwrap();
    // a push to release/1.2 deploys br-release-1-2…
    let v1 = w.commit("release/1.2", "rc1", BRANCHES);
    w.stack
        .push("release/1.2", &zero, &v1, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    let slug = preview_slug(None, "release/1.2");
    let env = w.env(slug.as_str());
    assert_eq!(env.state, EnvState::Live, "{:?}", env.last_error);
    assert_eq!(
        (env.kind, env.pr),
        (stagebot::types::EnvKind::Preview, None)
    );
    assert!(
        env.expires_at.is_some(),
        "branch environments expire like previews"
    );
    assert_eq!(w.stack.get(&env.url).await.unwrap(), (200, v1.to_string()));
    // …and follows it
    let v2 = w.commit("release/1.2", "rc2", BRANCHES);
    w.stack
        .push("release/1.2", &v1, &v2, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&env.url).await.unwrap(), (200, v2.to_string()));

    // a non-matching branch deploys nothing
    let other = w.commit("feature/nope", "x", BRANCHES);
    w.stack
        .push("feature/nope", &zero, &other, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    let envs = w.stack.app.store().envs().unwrap();
    assert_eq!(envs.len(), 1, "{envs:#?}");

    // a matching branch with an open PR gets only the PR's preview
    let qa = w.commit("qa/login/x", "qa", BRANCHES);
    let pr = TestPr::new(8, "qa/login/x", qa.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack
        .push("qa/login/x", &zero, &qa, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(8, "qa/login/x").state, EnvState::Live);
    assert!(!has_env(&w, preview_slug(None, "qa/login/x").as_str()));

    // deleting the branch tears its environment down
    w.stack.delete_branch("release/1.2").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.env(slug.as_str()).state, EnvState::Destroyed);
    assert_eq!(w.stack.get(&env.url).await.unwrap().0, 404);
}
