//! The release pipeline end to end (issue 10): `on_merge: staging` with promotion of a merged
//! pull request, and branch environments. Real server, worker, store, local provider and
//! processes; the fake GitHub over HTTP.

use stagebot::environment::{EnvState, Trigger};
use stagebot::slug::preview_slug;
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
    assert_eq!(staging.state(), EnvState::Live, "{:?}", staging.last_error);
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
    w.stack
        .expect_reply(5, |t| t.contains("needs **maintain** permission"));
    w.stack.expect_no_reply(5);
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
    assert_eq!(prod.state(), EnvState::Live, "{:?}", prod.last_error);
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
    assert_eq!(
        releases[0].checks.as_deref(),
        Some("no CI gate (`production.require_checks` is not set)")
    );
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
    let reply = w.stack.expect_reply(6, |_| true);
    w.stack.expect_no_reply(6);
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
    assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
    assert_eq!(
        (env.kind, env.pr),
        (stagebot::types::EnvKind::Preview, None)
    );
    assert!(
        env.expires_at().is_some(),
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
    assert_eq!(w.preview(8, "qa/login/x").state(), EnvState::Live);
    assert!(!has_env(&w, preview_slug(None, "qa/login/x").as_str()));

    // deleting the branch tears its environment down
    w.stack.delete_branch("release/1.2").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.env(slug.as_str()).state(), EnvState::Destroyed);
    assert_eq!(w.stack.get(&env.url).await.unwrap().0, 404);
}

const GATED: &str = "on_merge: staging\nproduction:\n  require_checks: [test, lint]\n";

/// Send what GitHub sends when check run `name` of `sha` changes (after the fake has it).
async fn check_event(w: &World, sha: &Sha, name: &str, status: &str, conclusion: Option<&str>) {
    w.stack
        .fake
        .set_check_run(w.repo(), sha, name, status, conclusion);
    let payload = stagebot::event::payloads::check_run(
        w.repo(),
        Some(stagebot::testkit::INSTALLATION),
        sha.as_str(),
        name,
        status,
        conclusion,
    );
    let (code, _) = w.stack.send("check_run", &payload).await.unwrap();
    assert_eq!(code, 202);
    w.stack.settle().await.unwrap();
}

/// The operator's promotion through the admin API (what `stagebot promote` sends).
async fn admin_post(w: &World, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let router = stagebot::server::admin_router(w.stack.app.clone());
    let req = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn production_deploy_checks_requests(w: &World) -> usize {
    w.stack
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/check-runs"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_checks_waits_for_ci_then_proceeds_or_fails_naming_the_check() {
    let w = World::new(GATED).await;
    let sha = w.commit("feature/gate", "v1", GATED);
    let mut pr = TestPr::new(21, "feature/gate", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let merge = merge(&w, &mut pr, "feature/gate", GATED).await;
    assert_eq!(
        w.env("staging").state(),
        EnvState::Live,
        "staging has no gate"
    );

    // `lint` passed, `test` runs: the promotion waits
    w.stack.fake.add_status(w.repo(), &merge, "lint", "success");
    w.stack
        .fake
        .set_check_run(w.repo(), &merge, "test", "in_progress", None);
    let c = w
        .stack
        .comment("maria", 21, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    let prod = w.env("production");
    let wait = prod.ci_wait().expect("the promotion waits for CI");
    assert!(
        wait.contains("1 of 2 checks passed") && wait.contains("`test`"),
        "{wait}"
    );
    assert_eq!(prod.current_release(), None);
    let sticky = w.stack.sticky(21).unwrap();
    assert!(
        sticky.contains("waiting for CI: 1 of 2 checks passed; pending: `test`"),
        "{sticky}"
    );
    let deps = w.stack.fake.deployments(w.repo(), "production");
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].last_state(), Some("queued"));
    assert!(
        w.stack
            .fake
            .statuses(w.repo(), &merge)
            .iter()
            .any(|s| s.context == "stagebot/production"
                && s.state == "pending"
                && s.description.contains("waiting for CI"))
    );
    assert_eq!(w.stack.fake.reactions(c), ["eyes"]);

    // check events about other commits re-evaluate nothing
    let reads = production_deploy_checks_requests(&w);
    let other = w.commit("feature/other", "x", GATED);
    check_event(&w, &other, "test", "completed", Some("success")).await;
    assert_eq!(production_deploy_checks_requests(&w), reads);
    assert!(w.env("production").ci_wait().is_some());

    // `test` succeeds: the webhook wakes the deploy, which goes live with the merge commit
    check_event(&w, &merge, "test", "completed", Some("success")).await;
    let prod = w.env("production");
    assert_eq!(prod.state(), EnvState::Live, "{:?}", prod.last_error);
    assert_eq!(prod.ci_wait(), None);
    assert_eq!(
        w.stack.get(&prod.url).await.unwrap(),
        (200, merge.to_string())
    );
    let releases = w.stack.app.store().releases(&prod.id).unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].sha, merge);
    assert_eq!(releases[0].by, "maria");
    assert_eq!(
        releases[0].checks.as_deref(),
        Some("CI passed: `test`, `lint`")
    );
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    let deps = w.stack.fake.deployments(w.repo(), "production");
    assert_eq!(
        deps.len(),
        1,
        "one deployment for the attempt, waiting then live"
    );
    assert_eq!(deps[0].last_state(), Some("success"));

    // a new commit on main reaches staging; the operator promotes it; `test` fails
    let next = w.commit("main", "v2", GATED);
    w.stack
        .push("main", &merge, &next, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    w.stack
        .fake
        .set_check_run(w.repo(), &next, "test", "queued", None);
    let (code, body) = admin_post(
        &w,
        &format!("/admin/repos/{}/promote", w.repo()),
        serde_json::json!({ "from": "staging" }),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["sha"], next.as_str());
    w.stack.settle().await.unwrap();
    assert!(w.env("production").ci_wait().is_some());
    check_event(&w, &next, "test", "completed", Some("failure")).await;
    let prod = w.env("production");
    assert_eq!(prod.state(), EnvState::Failed);
    let error = prod.last_error.clone().unwrap_or_default();
    assert!(error.contains("CI failed: `test`"), "{error}");
    // the release that was live still serves
    assert_eq!(prod.current_release(), Some(1));
    assert_eq!(
        w.stack.get(&prod.url).await.unwrap(),
        (200, merge.to_string())
    );
    assert!(
        w.stack
            .fake
            .statuses(w.repo(), &next)
            .iter()
            .any(|s| s.context == "stagebot/production" && s.state == "failure")
    );

    let deps = w.stack.fake.deployments(w.repo(), "production");
    assert_eq!(deps.len(), 2);
    assert_eq!(deps[1].last_state(), Some("failure"));

    // a gate that has already failed fails at once, and its deployment says so too
    let (code, body) = admin_post(
        &w,
        &format!("/admin/repos/{}/promote", w.repo()),
        serde_json::json!({ "from": "staging" }),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    w.stack.settle().await.unwrap();
    assert_eq!(w.env("production").state(), EnvState::Failed);
    let deps = w.stack.fake.deployments(w.repo(), "production");
    assert_eq!(deps.len(), 3);
    assert_eq!(deps[2].last_state(), Some("failure"));

    // without `checks: read` the gate cannot be evaluated, and the sticky says so
    w.stack.fake.deny_checks();
    let c = w
        .stack
        .comment("maria", 21, "/rollback production 1")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(
        w.stack.fake.reactions(c),
        ["eyes", "rocket"],
        "a rollback has no gate"
    );
    let (code, body) = admin_post(
        &w,
        &format!("/admin/repos/{}/promote", w.repo()),
        serde_json::json!({ "from": "staging" }),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    w.stack.settle().await.unwrap();
    let wait = w.env("production").ci_wait().unwrap_or_default().to_owned();
    assert!(
        wait.contains("cannot be evaluated") && wait.contains("checks: read"),
        "{wait}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_skips_the_gate_and_the_release_says_so() {
    let w = World::new(GATED).await;
    let sha = w.commit("feature/skip", "v1", GATED);
    let mut pr = TestPr::new(22, "feature/skip", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let merge = merge(&w, &mut pr, "feature/skip", GATED).await;
    w.stack.grant("root", stagebot::types::Permission::Admin);
    // a maintainer may not skip
    let c = w
        .stack
        .comment("maria", 22, "/promote production --skip-checks")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "confused"]);
    w.stack.expect_reply(22, |t| {
        t.contains("@maria: `/promote production --skip-checks` needs **admin** permission")
    });
    assert!(!has_env(&w, "production"));
    let c = w
        .stack
        .comment("root", 22, "/promote production --skip-checks")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    let prod = w.env("production");
    let releases = w.stack.app.store().releases(&prod.id).unwrap();
    assert_eq!(releases[0].sha, merge);
    assert_eq!(
        releases[0].checks.as_deref(),
        Some("CI checks skipped by @root (`--skip-checks`)")
    );
    assert_eq!(production_deploy_checks_requests(&w), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_deploys_a_branch_environment_by_hand() {
    let w = World::new("").await;
    w.stack.fake.set_clone_url(w.repo(), &w.git.clone_url());
    let sha = w.commit("demo/any", "demo", "");
    w.stack.fake.set_branch(w.repo(), "demo/any", &sha);
    let (code, body) = admin_post(
        &w,
        &format!("/admin/repos/{}/branch-deploy", w.repo()),
        serde_json::json!({ "branch": "demo/any" }),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    w.stack.settle().await.unwrap();
    let env = w.env(preview_slug(None, "demo/any").as_str());
    assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
    assert_eq!(body["url"], env.url.as_str());
    assert_eq!(w.stack.get(&env.url).await.unwrap(), (200, sha.to_string()));
    // it follows the branch's pushes from now on
    let v2 = w.commit("demo/any", "demo 2", "");
    w.stack
        .push("demo/any", &sha, &v2, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.get(&env.url).await.unwrap(), (200, v2.to_string()));
    // an unknown branch is a 404
    let (code, body) = admin_post(
        &w,
        &format!("/admin/repos/{}/branch-deploy", w.repo()),
        serde_json::json!({ "branch": "nope" }),
    )
    .await;
    assert_eq!(code, 404, "{body}");
}

/// The build prints this line each time it runs (the command's own text does not contain it).
const COUNTED_BUILD: &str = "build: echo \"BUILD-$((40+2)) $STAGEBOT_SHA\"\n";

/// How many times `build` ran, from every release log of the repository.
fn builds_run(w: &World) -> usize {
    let store = w.stack.app.store();
    let mut n = 0;
    for env in store.envs_of_repo(w.repo()).unwrap() {
        for r in store.releases(&env.id).unwrap() {
            let (path, _) = w.stack.app.log_location(&env.id, r.n);
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            n += log.matches("BUILD-42").count();
        }
    }
    n
}

fn kept_artifacts(w: &World) -> usize {
    let dir = w
        .stack
        .app
        .settings()
        .data_dir
        .join("artifacts/acme/webapp");
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_reuse_the_built_artifact() {
    let w = World::new(COUNTED_BUILD).await;
    let sha1 = w.commit("feature/once", "v1", COUNTED_BUILD);
    let mut pr = TestPr::new(31, "feature/once", sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let preview = w.preview(31, "feature/once");
    assert_eq!(preview.state(), EnvState::Live, "{:?}", preview.last_error);
    assert_eq!(builds_run(&w), 1);

    // promote: production starts from the preview's build
    w.stack
        .comment("maria", 31, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    let prod = w.env("production");
    assert_eq!(prod.state(), EnvState::Live, "{:?}", prod.last_error);
    assert_eq!(
        w.stack.get(&prod.url).await.unwrap(),
        (200, sha1.to_string())
    );
    assert_eq!(builds_run(&w), 1, "the promotion ran build");
    let r1 = w.stack.app.store().release(&prod.id, 1).unwrap().unwrap();
    assert_eq!(
        r1.artifact,
        Some(format!(
            "reused artifact of release #1 ({})",
            preview.id.slug
        ))
    );

    // a new commit is built once, and promoted without building
    let sha2 = w.commit("feature/once", "v2", COUNTED_BUILD);
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(builds_run(&w), 2);
    w.stack
        .comment("maria", 31, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(
        w.stack.get(&prod.url).await.unwrap(),
        (200, sha2.to_string())
    );
    assert_eq!(builds_run(&w), 2, "the promotion ran build");

    // rollback: back to the first build, still without building
    let c = w
        .stack
        .comment("maria", 31, "/rollback production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.stack.fake.reactions(c), ["eyes", "rocket"]);
    assert_eq!(
        w.stack.get(&prod.url).await.unwrap(),
        (200, sha1.to_string())
    );
    assert_eq!(builds_run(&w), 2, "the rollback ran build");
    let r3 = w.stack.app.store().release(&prod.id, 3).unwrap().unwrap();
    assert_eq!(
        r3.artifact,
        Some(format!(
            "reused artifact of release #1 ({})",
            preview.id.slug
        ))
    );
    assert_eq!(kept_artifacts(&w), 2);

    // the preview goes; production's live and rollback-able builds stay
    w.stack.close_pr(&mut pr, false).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(31, "feature/once").state(), EnvState::Destroyed);
    assert_eq!(kept_artifacts(&w), 2);
}
