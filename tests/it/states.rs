//! Stories of the environment state machine with the in-memory provider: the real server,
//! worker, engine, runners and store, signed webhooks and the fake GitHub over HTTP, but no
//! git, no build and no processes, so each story runs in a fraction of a second. What the
//! provider was asked to do is counted from its record of calls.

use std::time::Duration;

use stagebot::environment::{EnvRecord, EnvState};
use stagebot::provider::memory::{Call, MemoryProvider, Outcome};
use stagebot::slug::preview_slug;
use stagebot::testkit::{Stack, StackOptions, TestPr};
use stagebot::types::{EnvId, PrNumber, Sha};

struct Story {
    stack: Stack,
    provider: MemoryProvider,
    _dir: tempfile::TempDir,
}

/// Generous: a story step takes milliseconds; this only keeps a broken test from hanging.
const STEP: Duration = Duration::from_secs(20);

impl Story {
    async fn new(tweak: impl FnOnce(&mut StackOptions)) -> Story {
        let dir = tempfile::tempdir().unwrap();
        let provider = MemoryProvider::new();
        let mut opts = StackOptions::new(&dir.path().join("data"));
        opts.memory_provider = Some(provider.clone());
        tweak(&mut opts);
        let stack = Stack::start(opts).await.unwrap();
        Story {
            stack,
            provider,
            _dir: dir,
        }
    }

    fn pr(&self, n: u64, branch: &str, sha: &Sha) -> TestPr {
        TestPr::new(n, branch, sha.clone(), "https://github.com/acme/webapp.git")
    }

    fn id(&self, pr: &TestPr) -> EnvId {
        EnvId {
            repo: self.stack.repo.clone(),
            slug: preview_slug(Some(PrNumber(pr.number)), &pr.branch),
        }
    }

    fn env(&self, pr: &TestPr) -> EnvRecord {
        self.stack
            .app
            .store()
            .env(&self.id(pr))
            .unwrap()
            .unwrap_or_else(|| panic!("no environment for PR {}", pr.number))
    }

    fn release_shas(&self, pr: &TestPr) -> Vec<Sha> {
        self.stack
            .app
            .store()
            .releases(&self.id(pr))
            .unwrap()
            .into_iter()
            .map(|r| r.sha)
            .collect()
    }

    async fn settle(&self) {
        tokio::time::timeout(STEP, self.stack.settle())
            .await
            .expect("the stack settles")
            .unwrap();
    }

    async fn wait_for(&self, what: &str, pred: impl Fn(&Call) -> bool) {
        tokio::time::timeout(STEP, self.provider.wait_for(pred))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the provider never saw {what}: {:#?}",
                    self.provider.calls()
                )
            });
    }
}

fn sha(c: char) -> Sha {
    Sha::new(&c.to_string().repeat(40)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_live_push_newest_wins_then_close_tears_down() {
    let s = Story::new(|_| {}).await;
    let mut pr = s.pr(7, "feature/login", &sha('1'));
    s.stack.open_pr(&pr).await.unwrap();
    s.settle().await;
    let env = s.env(&pr);
    assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
    assert_eq!(s.provider.running(&env.id), Some((sha('1'), 1)));

    // A push whose deploy hangs, then a newer push while it runs: the older deploy is dropped
    // and only the newest commit becomes a release.
    s.provider.script(&sha('2'), Outcome::Hang);
    s.stack.synchronize(&mut pr, sha('2')).await.unwrap();
    s.wait_for(
        "the deploy of 2",
        |c| matches!(c, Call::Deploy { sha, .. } if *sha == self::sha('2')),
    )
    .await;
    assert_eq!(s.env(&pr).state(), EnvState::Deploying);
    assert_eq!(s.env(&pr).deploying(), Some(&sha('2')));
    s.stack.synchronize(&mut pr, sha('3')).await.unwrap();
    s.settle().await;
    let env = s.env(&pr);
    assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
    assert_eq!(s.release_shas(&pr), vec![sha('1'), sha('3')]);
    assert_eq!(env.current_release(), Some(2));
    assert_eq!(s.provider.running(&env.id), Some((sha('3'), 2)));
    let calls = s.provider.calls();
    let id = env.id.clone();
    assert!(
        calls.contains(&Call::Cancelled {
            env: id.clone(),
            sha: sha('2')
        }),
        "{calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Finished { sha, .. } if *sha == self::sha('2')))
    );
    assert_eq!(s.provider.deploys(&id), vec![sha('1'), sha('2'), sha('3')]);
    // The superseded commit's report is not "live" anywhere on GitHub.
    let deps = s
        .stack
        .fake
        .deployments(&s.stack.repo, &format!("preview/{}", id.slug));
    assert!(
        deps.iter()
            .filter(|d| d.sha == sha('2').as_str())
            .all(|d| d.last_state() != Some("success")),
        "{deps:#?}"
    );

    // The same commit delivered again (a redelivery) deploys nothing.
    s.stack
        .pr_event("synchronize", &pr, Some(&sha('2')))
        .await
        .unwrap();
    s.settle().await;
    assert_eq!(s.provider.deploys(&id).len(), 3);
    assert_eq!(s.env(&pr).current_release(), Some(2));

    s.stack.close_pr(&mut pr, false).await.unwrap();
    s.settle().await;
    let env = s.env(&pr);
    assert_eq!(env.state(), EnvState::Destroyed);
    assert_eq!(env.op(), None);
    assert_eq!(s.provider.teardowns(&id), 1);
    assert_eq!(s.provider.running(&id), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deploy_then_restarts_that_fail_back_off() {
    let start = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let s = Story::new(|o| o.manual_clock = Some(start)).await;
    let clock = s.stack.clock.clone().unwrap();
    s.provider.script(
        &sha('1'),
        Outcome::Fail("`build` exited with status 2".into()),
    );
    let mut pr = s.pr(8, "feature/pay", &sha('1'));
    s.stack.open_pr(&pr).await.unwrap();
    s.settle().await;
    let env = s.env(&pr);
    assert_eq!(env.state(), EnvState::Failed);
    assert_eq!(env.attempted(), Some(&sha('1')));
    assert!(env.last_error.as_deref().unwrap().contains("status 2"));
    assert!(s.release_shas(&pr).is_empty());
    // A failed deploy (not a restart) is never restarted.
    assert_eq!(s.stack.app.reconcile_local().await.unwrap().restarted, 0);

    s.stack.synchronize(&mut pr, sha('2')).await.unwrap();
    s.settle().await;
    let id = s.env(&pr).id;
    assert_eq!(s.env(&pr).state(), EnvState::Live);
    assert_eq!(s.env(&pr).current_release(), Some(1));

    // The app dies: the reconciler restarts the same release (no new release).
    s.provider.stop(&id);
    assert_eq!(s.stack.app.reconcile_local().await.unwrap().restarted, 1);
    s.settle().await;
    assert_eq!(s.env(&pr).state(), EnvState::Live);
    assert_eq!(s.provider.running(&id), Some((sha('2'), 1)));
    assert_eq!(s.release_shas(&pr), vec![sha('2')]);

    // It dies again and every restart fails: 2, 4, 8 minutes between tries, none sooner.
    s.provider
        .set_default(Outcome::Fail("`start` exited".into()));
    s.provider.stop(&id);
    let mut restarts = 0;
    for (failures, wait) in [(1u32, 2i64), (2, 4), (3, 8)] {
        assert_eq!(s.stack.app.reconcile_local().await.unwrap().restarted, 1);
        s.settle().await;
        restarts += 1;
        let env = s.env(&pr);
        assert_eq!(env.state(), EnvState::Failed);
        let backoff = env.restart_backoff().unwrap();
        assert_eq!(backoff.failures, failures);
        assert_eq!(
            backoff.next_at,
            clock_now(&s) + chrono::Duration::minutes(wait)
        );
        clock.advance(chrono::Duration::minutes(wait) - chrono::Duration::seconds(1));
        assert_eq!(s.stack.app.reconcile_local().await.unwrap().restarted, 0);
        clock.advance(chrono::Duration::seconds(1));
    }
    // Then one that works: live again, the count forgotten.
    s.provider.set_default(Outcome::Succeed);
    assert_eq!(s.stack.app.reconcile_local().await.unwrap().restarted, 1);
    s.settle().await;
    let env = s.env(&pr);
    assert_eq!(env.state(), EnvState::Live);
    assert_eq!(env.restart_backoff(), None);
    assert_eq!(env.current_release(), Some(1));
    // Deploys: 1 (failed), 2, then the restarts of release 1 (one ok, three failed, one ok).
    let releases: Vec<u32> = s
        .provider
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Deploy { release, .. } => Some(*release),
            _ => None,
        })
        .collect();
    assert_eq!(releases, vec![1, 1, 1, 1, 1, 1, 1]);
    assert_eq!(restarts, 3);
    assert_eq!(s.release_shas(&pr), vec![sha('2')]);
}

fn clock_now(s: &Story) -> chrono::DateTime<chrono::Utc> {
    s.stack.app.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capacity_queue_starts_the_next_preview_when_one_goes() {
    let s = Story::new(|o| o.max_previews = Some(1)).await;
    let mut first = s.pr(1, "one", &sha('a'));
    let second = s.pr(2, "two", &sha('b'));
    let mut third = s.pr(3, "three", &sha('c'));
    s.stack.open_pr(&first).await.unwrap();
    s.settle().await;
    s.stack.open_pr(&second).await.unwrap();
    s.settle().await;
    assert_eq!(s.env(&first).state(), EnvState::Live);
    assert_eq!(s.env(&second).state(), EnvState::Queued);
    assert!(s.env(&second).queued_at().is_some());
    assert!(s.provider.deploys(&s.id(&second)).is_empty());

    // The first goes: the queued one gets its slot.
    s.stack.close_pr(&mut first, false).await.unwrap();
    s.settle().await;
    assert_eq!(s.env(&first).state(), EnvState::Destroyed);
    let second_env = s.env(&second);
    assert_eq!(
        second_env.state(),
        EnvState::Live,
        "{:?}",
        second_env.last_error
    );
    assert_eq!(second_env.queued_at(), None);
    let order: Vec<(u64, &str)> = s
        .provider
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Deploy { env, .. } => Some((env.slug.as_str().to_owned(), "deploy")),
            Call::Teardown { env } => Some((env.slug.as_str().to_owned(), "teardown")),
            _ => None,
        })
        .map(|(slug, what)| (if slug.starts_with("pr-1-") { 1 } else { 2 }, what))
        .collect();
    assert_eq!(order, vec![(1, "deploy"), (1, "teardown"), (2, "deploy")]);

    // A queued preview whose PR closes is torn down without ever deploying, and takes no slot.
    s.stack.open_pr(&third).await.unwrap();
    s.settle().await;
    assert_eq!(s.env(&third).state(), EnvState::Queued);
    s.stack.close_pr(&mut third, false).await.unwrap();
    s.settle().await;
    let third_env = s.env(&third);
    assert_eq!(third_env.state(), EnvState::Destroyed);
    assert_eq!(third_env.op(), None);
    assert!(s.provider.deploys(&third_env.id).is_empty());
    assert_eq!(s.env(&second).state(), EnvState::Live);
}
