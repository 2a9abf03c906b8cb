//! GitHub Deployments end to end: every release is a deployment of its own (promote, rollback, a
//! redeploy of a commit seen before), the one it replaces goes `inactive`, a failed attempt ends in
//! `failure`, and the reporter never turns a store error into a wrong report (docs/architecture.md,
//! "Talking to GitHub" and "Idempotency").

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use stagebot::environment::{EnvState, Trigger};
use stagebot::fake_github::FakeDeployment;
use stagebot::lifecycle::Phase;
use stagebot::reporter::DeploymentPayload;
use stagebot::store::{Access, StoreFault};
use stagebot::testkit::TestPr;
use stagebot::types::{PrNumber, Sha};

use crate::flows::World;

/// (commit, newest state) of each deployment, oldest first.
fn summary(deps: &[FakeDeployment]) -> Vec<(String, String)> {
    deps.iter()
        .map(|d| (d.sha.clone(), d.last_state().unwrap_or("none").to_owned()))
        .collect()
}

fn row(sha: &Sha, state: &str) -> (String, String) {
    (sha.to_string(), state.to_owned())
}

fn payload(d: &FakeDeployment) -> DeploymentPayload {
    DeploymentPayload::from_json(&d.payload)
        .unwrap_or_else(|| panic!("deployment {} has no stagebot payload: {}", d.id, d.payload))
}

fn states(d: &FakeDeployment) -> Vec<&str> {
    d.statuses.iter().map(|s| s.state.as_str()).collect()
}

async fn say(w: &World, who: &str, pr: u64, body: &str) {
    let c = w.stack.comment(who, pr, body).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(
        w.stack.fake.reactions(c),
        ["eyes", "rocket"],
        "{body}: {:?}",
        w.stack.replies(pr).last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_release_is_a_deployment_of_its_own_and_the_one_before_goes_inactive() {
    let w = World::new("").await;
    let sha1 = w.commit("rel", "v1", "");
    let mut pr = TestPr::new(11, "rel", sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let preview = format!("preview/{}", w.preview(11, "rel").id.slug);
    let sha2 = w.commit("rel", "v2", "");
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    let deps = w.stack.fake.deployments(w.repo(), &preview);
    assert_eq!(
        summary(&deps),
        [row(&sha1, "inactive"), row(&sha2, "success")],
        "a push: a new deployment, the previous one inactive (stagebot's own status: GitHub's \
         auto_inactive skips transient environments)"
    );

    // staging and production get sha2
    say(&w, "alice", 11, "/promote").await;
    say(&w, "maria", 11, "/promote production").await;

    // /rollback: the preview goes back to sha1 with a new deployment, not the old one's
    say(&w, "alice", 11, "/rollback").await;
    let deps = w.stack.fake.deployments(w.repo(), &preview);
    assert_eq!(
        summary(&deps),
        [
            row(&sha1, "inactive"),
            row(&sha2, "inactive"),
            row(&sha1, "success")
        ]
    );
    assert_eq!(states(&deps[2]), ["in_progress", "success"]);
    assert_eq!(
        states(&deps[0]),
        ["in_progress", "success", "inactive"],
        "the old deployment of sha1 got nothing new"
    );
    assert_eq!(
        payload(&deps[2]).trigger,
        Trigger::Rollback { to_release: 1 }
    );

    // staging and production move to sha1 (the preview's live commit): second deployments
    say(&w, "alice", 11, "/promote").await;
    say(&w, "maria", 11, "/promote production").await;

    // `/stage` deploys the PR's head again: a commit deployed before gets a deployment of its own
    say(&w, "alice", 11, "/stage").await;
    let deps = w.stack.fake.deployments(w.repo(), &preview);
    assert_eq!(
        summary(&deps),
        [
            row(&sha1, "inactive"),
            row(&sha2, "inactive"),
            row(&sha1, "inactive"),
            row(&sha2, "success")
        ]
    );
    assert_eq!(payload(&deps[3]).trigger, Trigger::Stage);

    let staging = w.stack.fake.deployments(w.repo(), "staging");
    assert_eq!(
        summary(&staging),
        [row(&sha2, "inactive"), row(&sha1, "success")]
    );
    assert_eq!(
        states(&staging[0]),
        ["in_progress", "success", "inactive"],
        "staging's previous deployment is made inactive once, by GitHub's auto_inactive"
    );
    let production = w.stack.fake.deployments(w.repo(), "production");
    assert_eq!(
        summary(&production),
        [row(&sha2, "inactive"), row(&sha1, "success")],
        "production is excluded from auto_inactive: stagebot marks the old one"
    );

    // /rollback production: back to sha2 as a third deployment; the rolled-back one is inactive
    say(&w, "maria", 11, "/rollback production").await;
    let production = w.stack.fake.deployments(w.repo(), "production");
    assert_eq!(
        summary(&production),
        [
            row(&sha2, "inactive"),
            row(&sha1, "inactive"),
            row(&sha2, "success")
        ]
    );
    assert!(production.iter().all(|d| d.production && !d.transient));
    let p: Vec<DeploymentPayload> = production.iter().map(payload).collect();
    assert_eq!(
        p.iter().map(|p| p.release).collect::<Vec<_>>(),
        [1, 2, 3],
        "one deployment per release"
    );
    assert_eq!(p[2].trigger, Trigger::Rollback { to_release: 1 });
    assert_eq!(p[2].actor, "maria");
    assert_eq!(p[2].environment, "production");
    assert_eq!(p[2].sha, sha2);

    // every deployment has its own idempotency key
    let all = w.stack.fake.all_deployments(w.repo());
    let keys: BTreeSet<(String, u64)> = all
        .iter()
        .map(payload)
        .map(|p| (p.environment, p.attempt))
        .collect();
    assert_eq!(keys.len(), all.len(), "{all:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_ends_in_failure_and_the_live_one_stays_current() {
    let w = World::new("").await;
    let sha1 = w.commit("flaky", "v1", "");
    let mut pr = TestPr::new(12, "flaky", sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let preview = format!("preview/{}", w.preview(12, "flaky").id.slug);
    let bad = "build: \"echo broken >&2; exit 3\"\n";
    let sha2 = w.commit("flaky", "v2", bad);
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.preview(12, "flaky").state(), EnvState::Failed);
    let deps = w.stack.fake.deployments(w.repo(), &preview);
    assert_eq!(
        summary(&deps),
        [row(&sha1, "success"), row(&sha2, "failure")],
        "the failed attempt has its own deployment; the release still serving stays current"
    );
    assert_eq!(states(&deps[1]), ["in_progress", "failure"]);

    let sha3 = w.commit("flaky", "v3", "");
    w.stack.synchronize(&mut pr, sha3.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    let deps = w.stack.fake.deployments(w.repo(), &preview);
    assert_eq!(
        summary(&deps),
        [
            row(&sha1, "inactive"),
            row(&sha2, "failure"),
            row(&sha3, "success")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_deployment_id_is_adopted_not_created_twice() {
    let w = World::new("").await;
    // The intent is written, the deployment created, then recording its id fails every time
    // (the first try and every retry): that report fails after the POST.
    w.stack
        .app
        .store()
        .inject_fault(StoreFault::new("attempts", Access::Write, 1 + 3).after(1));
    let sha = w.commit("lost-id", "v1", "");
    let pr = TestPr::new(13, "lost-id", sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(13, "lost-id");
    assert_eq!(env.state(), EnvState::Live);
    assert!(!env.report_pending, "the live report went through");
    let deps = w
        .stack
        .fake
        .deployments(w.repo(), &format!("preview/{}", env.id.slug));
    assert_eq!(deps.len(), 1, "{deps:#?}");
    assert_eq!(
        states(&deps[0]),
        ["success"],
        "the deploying report failed after its POST; the live report adopted its deployment"
    );
    let attempts = w.stack.app.store().attempts(&env.id).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].deployment_id, Some(deps[0].id));
    assert_eq!(payload(&deps[0]).attempt, attempts[0].attempt);
    let lookups = w
        .stack
        .fake
        .requests_to("GET", "/repos/acme/webapp/deployments");
    assert_eq!(
        lookups.len(),
        1,
        "one lookup, by the report after the failure"
    );
    let query = lookups[0].query.clone().unwrap_or_default();
    assert!(
        query.contains(&format!("sha={sha}")) && query.contains("environment=preview%2F"),
        "{query}"
    );
}

/// A `tracing` writer into a buffer the test reads.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_report_pending_write_is_logged_and_the_report_sent_again() {
    let w = World::new("").await;
    let sha = w.commit("bookkeeping", "v1", "");
    let pr = TestPr::new(14, "bookkeeping", sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let id = w.preview(14, "bookkeeping").id;
    let store = w.stack.app.store();
    store.update_env(&id, |r| r.report_pending = true).unwrap();

    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    {
        // The report runs on this thread, where the subscriber is the default.
        let _guard = tracing::subscriber::set_default(subscriber);
        store.inject_fault(StoreFault::new("environments", Access::Write, 1));
        w.stack.app.reporter().report(&id, Phase::Live).await;
    }
    let text = logs.text();
    assert!(
        text.contains("could not record the report's outcome")
            && text.contains(&id.to_string())
            && text.contains("injected fault"),
        "{text}"
    );
    assert!(
        store.env(&id).unwrap().unwrap().report_pending,
        "still owed, so the reconciler sends it again"
    );
    w.stack.app.reconcile_github().await.unwrap();
    assert!(!store.env(&id).unwrap().unwrap().report_pending);
    let deps = w
        .stack
        .fake
        .deployments(w.repo(), &format!("preview/{}", id.slug));
    assert_eq!(deps.len(), 1, "the repeated report reused the deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_read_error_never_blanks_the_sticky_comment() {
    let w = World::new("").await;
    let sha = w.commit("readfail", "v1", "");
    let pr = TestPr::new(15, "readfail", sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let env = w.preview(15, "readfail");
    let before = w.stack.sticky(15).unwrap();
    assert!(before.contains(&env.url), "{before}");
    let store = w.stack.app.store();
    for fault in [
        // the PR record
        StoreFault::new("prs", Access::Read, 1),
        // the environments listed (the report's own read of its environment goes through)
        StoreFault::new("environments", Access::Read, 1).after(1),
    ] {
        let edits = w
            .stack
            .fake
            .requests_to("PATCH", "/repos/acme/webapp/issues/comments");
        store.inject_fault(fault.clone());
        w.stack.app.reporter().report(&env.id, Phase::Live).await;
        assert_eq!(
            w.stack
                .fake
                .requests_to("PATCH", "/repos/acme/webapp/issues/comments")
                .len(),
            edits.len(),
            "{fault:?}: the sticky comment was edited"
        );
        assert_eq!(w.stack.sticky(15).unwrap(), before, "{fault:?}");
        assert!(
            store.env(&env.id).unwrap().unwrap().report_pending,
            "{fault:?}: the report is retried later"
        );
        // later, the store reads again: the report goes through
        w.stack.app.reconcile_github().await.unwrap();
        assert!(!store.env(&env.id).unwrap().unwrap().report_pending);
        assert_eq!(w.stack.sticky(15).unwrap(), before);
    }
    let comments = w.stack.fake.comments(w.repo(), PrNumber(15));
    assert!(
        comments
            .iter()
            .all(|c| !c.text().contains("No environment")),
        "{comments:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_attempts_never_stay_in_progress() {
    let w = World::new("").await;
    let sha1 = w.commit("rapid", "v1", "");
    let mut pr = TestPr::new(16, "rapid", sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let preview = format!("preview/{}", w.preview(16, "rapid").id.slug);
    // slow builds, each cut short by the next push once its deployment is in progress
    let slow = "build: sleep 5\n";
    let mut shas = vec![sha1];
    for n in 2..=3 {
        let sha = w.commit("rapid", &format!("v{n}"), slow);
        w.stack.synchronize(&mut pr, sha.clone()).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !w
            .stack
            .fake
            .deployments(w.repo(), &preview)
            .iter()
            .any(|d| d.sha == sha.as_str() && d.last_state() == Some("in_progress"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no deployment of v{n}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        shas.push(sha);
    }
    let last = w.commit("rapid", "v4", "");
    w.stack.synchronize(&mut pr, last.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    let deps = w.stack.fake.deployments(w.repo(), &preview);
    assert_eq!(
        summary(&deps),
        [
            row(&shas[0], "inactive"),
            row(&shas[1], "inactive"),
            row(&shas[2], "inactive"),
            row(&last, "success")
        ]
    );
    assert_eq!(states(&deps[1]), ["in_progress", "inactive"]);
    assert_eq!(
        deps[1].statuses[1].description,
        format!("Superseded by a newer deploy ({})", shas[2].short())
    );
}

/// GitHub sends the merged PR's `closed` and the push to the default branch close together, in
/// no set order: either way, the PR's sticky comment ends up showing production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merged_prs_sticky_shows_production_when_the_push_comes_first() {
    let w = World::new("").await;
    let sha = w.commit("feature/early", "v1", "");
    let mut pr = TestPr::new(17, "feature/early", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let merge = w.git.merge("feature/early").unwrap();
    w.stack
        .mirror(&merge, &stagebot::testkit::python_app_files(""));
    w.stack
        .push("main", &w.main_sha, &merge, &w.git.clone_url())
        .await
        .unwrap();
    w.stack.settle().await.unwrap();
    assert!(
        !w.stack
            .sticky(17)
            .unwrap()
            .contains("| production `production`"),
        "not merged yet as far as stagebot knows"
    );
    pr.merge_sha = Some(merge.clone());
    w.stack.close_pr(&mut pr, true).await.unwrap();
    w.stack.settle().await.unwrap();
    let sticky = w.stack.sticky(17).unwrap();
    let row = sticky
        .lines()
        .find(|l| l.starts_with("| production `production`"))
        .unwrap_or_else(|| panic!("no production row:\n{sticky}"));
    assert!(
        row.contains("✅ live") && row.contains(merge.short()),
        "{row}"
    );
}

/// A store written before attempt records existed knows its deployments per commit
/// (`EnvRecord::deployments`): the first report after the upgrade reuses that deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_made_before_attempt_records_is_reused_after_an_upgrade() {
    let w = World::new("").await;
    let store = w.stack.app.store();
    // No attempt can be recorded: the deploy happens, its reports fail before any POST.
    store.inject_fault(StoreFault::new("attempts", Access::Write, 1_000));
    let sha = w.commit("upgrade", "v1", "");
    let pr = TestPr::new(18, "upgrade", sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    store.clear_faults();
    let env = w.preview(18, "upgrade");
    assert_eq!(env.state(), EnvState::Live);
    assert!(env.report_pending);
    let environment = format!("preview/{}", env.id.slug);
    assert!(w.stack.fake.deployments(w.repo(), &environment).is_empty());
    // what the older version had done: a deployment of the commit, its id kept per commit
    let client = w
        .stack
        .app
        .repo_client(env.installation_id, w.repo())
        .await
        .unwrap();
    let old = client
        .create_deployment(&stagebot::github::NewDeployment {
            git_ref: sha.clone(),
            environment: environment.clone(),
            description: "stagebot preview (older version)".into(),
            transient_environment: true,
            production_environment: false,
            payload: serde_json::json!({}),
        })
        .await
        .unwrap();
    store
        .update_env(&env.id, |r| {
            r.deployments.insert(sha.to_string(), old);
        })
        .unwrap();
    w.stack.app.reconcile_github().await.unwrap();
    let deps = w.stack.fake.deployments(w.repo(), &environment);
    assert_eq!(deps.len(), 1, "{deps:#?}");
    assert_eq!((deps[0].id, deps[0].last_state()), (old, Some("success")));
    assert_eq!(store.attempts(&env.id).unwrap()[0].deployment_id, Some(old));
}
