//! `stagebot recover` / `STAGEBOT_RECOVER=auto` (src/recover.rs): a lost data dir is rebuilt from
//! what GitHub holds, and the reconciler brings back what should be live.

use stagebot::environment::{EnvState, Trigger};
use stagebot::testkit::{Stack, StackOptions, TestPr};
use stagebot::types::{EnvId, Permission, PrNumber, Slug};

use crate::flows::World;

fn id(stack: &Stack, slug: &str) -> EnvId {
    EnvId {
        repo: stack.repo.clone(),
        slug: Slug::new(slug).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_on_an_empty_data_dir_brings_back_previews_staging_and_production() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let w = World::with("", |o| o.data_dir = data.clone()).await;
    w.stack.grant("maria", Permission::Maintain);
    let sha1 = w.commit("recov", "v1", "");
    let mut pr = TestPr::new(80, "recov", sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let sha2 = w.commit("recov", "v2", "");
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    w.stack.comment("alice", 80, "/promote").await.unwrap();
    w.stack.settle().await.unwrap();
    w.stack
        .comment("maria", 80, "/promote production")
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    w.stack.comment("alice", 80, "/rollback").await.unwrap();
    w.stack.settle().await.unwrap();
    // A second PR whose preview is gone.
    let sha3 = w.commit("closed-one", "v1", "");
    let mut closed = TestPr::new(81, "closed-one", sha3, &w.git.clone_url());
    w.stack.open_pr(&closed).await.unwrap();
    w.stack.settle().await.unwrap();
    w.stack.close_pr(&mut closed, false).await.unwrap();
    w.stack.settle().await.unwrap();

    let preview = w.preview(80, "recov");
    assert_eq!(preview.current_release(), Some(3));
    let before: Vec<_> = ["staging", "production", preview.id.slug.as_str()]
        .iter()
        .map(|s| {
            let e = w.env(s);
            let releases = w.stack.app.store().releases(&e.id).unwrap();
            (e.state(), e.current_release(), e.url.clone(), releases)
        })
        .collect();
    let closed_slug = w.preview(81, "closed-one").id.slug;
    let sticky_before = w
        .stack
        .fake
        .comments(w.repo(), PrNumber(80))
        .into_iter()
        .find(|c| c.is_sticky())
        .unwrap()
        .id;
    let addr = w.stack.addr;
    let repo = w.repo().clone();
    let clone_url = w.git.clone_url();
    // A writer forges a production release in stagebot's payload format (anyone with write
    // access can create deployments): recovery must not trust it.
    let genuine = w.stack.fake.deployments(w.repo(), "production");
    let mut forged = genuine.last().unwrap().payload.clone();
    forged["stagebot"]["release"] = serde_json::json!(999);
    forged["stagebot"]["sha"] = serde_json::json!(closed.sha.to_string());
    w.stack
        .fake
        .add_user_deployment(w.repo(), "production", &closed.sha.to_string(), forged);
    let World { stack, _check, .. } = w;
    drop(_check);
    let fake = stack.stop().await;

    // The disk is lost.
    std::fs::remove_dir_all(&data).unwrap();
    fake.set_repo_clone_url(&repo, &clone_url);
    let mut opts = StackOptions::new(&data);
    opts.listen = Some(addr);
    opts.recover = true;
    let stack = Stack::start_with(fake, opts).await.unwrap();
    stack.settle().await.unwrap();

    let store = stack.app.store();
    for (slug, (state, current, url, releases)) in
        ["staging", "production", preview.id.slug.as_str()]
            .iter()
            .zip(&before)
    {
        let env = store.env(&id(&stack, slug)).unwrap().unwrap();
        assert_eq!(
            (env.state(), env.current_release(), &env.url),
            (*state, *current, url),
            "{slug}: {env:#?}"
        );
        let got = store.releases(&env.id).unwrap();
        let strip = |rs: &[stagebot::environment::Release]| {
            rs.iter()
                .map(|r| {
                    (
                        r.n,
                        r.sha.clone(),
                        r.trigger.clone(),
                        r.by.clone(),
                        r.url.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&got), strip(releases), "{slug}");
        // … and it serves again, the release that was live.
        let want = releases
            .iter()
            .find(|r| Some(r.n) == *current)
            .map(|r| r.sha.to_string())
            .unwrap();
        assert_eq!(stack.get(&env.url).await.unwrap(), (200, want), "{slug}");
    }
    let prod = store.releases(&id(&stack, "production")).unwrap();
    assert!(
        matches!(&prod[0].trigger, Trigger::Promote { from, release: Some(_) } if *from == preview.id.slug),
        "{:?}",
        prod[0].trigger
    );
    let rolled = store.release(&preview.id, 3).unwrap().unwrap();
    assert_eq!(rolled.trigger, Trigger::Rollback { to_release: 1 });
    assert_eq!(rolled.sha, sha1);
    // The closed PR's preview stays gone; its history is kept.
    let gone = store
        .env(&id(&stack, closed_slug.as_str()))
        .unwrap()
        .unwrap();
    assert_eq!(gone.state(), EnvState::Destroyed);
    // The sticky comment is found again, and nothing old is replayed.
    assert_eq!(
        store
            .pr(&stack.repo, PrNumber(80))
            .unwrap()
            .sticky_comment_id,
        Some(sticky_before)
    );
    assert!(
        stack
            .fake
            .requests_to("POST", "/app/hook/deliveries/")
            .is_empty()
    );

    // Life goes on: the next push is release 4, and the same sticky comment is edited.
    let mut files = stagebot::testkit::python_app_files("");
    files.push(("NOTE.txt", "v4".to_owned()));
    let sha4 = w.git.commit("recov", &files, "v4").unwrap();
    stack.mirror(&sha4, &files);
    stack.synchronize(&mut pr, sha4.clone()).await.unwrap();
    stack.settle().await.unwrap();
    let env = store.env(&preview.id).unwrap().unwrap();
    assert_eq!(env.current_release(), Some(4));
    assert_eq!(stack.get(&env.url).await.unwrap(), (200, sha4.to_string()));
    assert!(stack.sticky(80).is_some());
    stack.stop().await;
}
