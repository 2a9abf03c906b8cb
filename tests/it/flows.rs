//! The pull-request stories end to end: signed webhooks in, the real server, worker, store and
//! local provider with real processes, the fake GitHub over HTTP; assertions on what GitHub
//! received and on what the preview URL serves.

use stagebot::store::EnvState;
use stagebot::testkit::{GitRepo, Stack, StackOptions, TestPr, python_app_files};
use stagebot::types::{EnvId, Permission, RepoName, Sha, Slug};

pub struct World {
    pub stack: Stack,
    pub git: GitRepo,
    pub main_sha: Sha,
    pub _dir: tempfile::TempDir,
}

impl World {
    pub async fn new(extra_config: &str) -> World {
        Self::with(extra_config, |_| {}).await
    }

    pub async fn with(extra_config: &str, tweak: impl FnOnce(&mut StackOptions)) -> World {
        let dir = tempfile::tempdir().unwrap();
        let files = python_app_files(extra_config);
        let (git, main_sha) = GitRepo::init(&dir.path().join("src"), &files).unwrap();
        let mut opts = StackOptions::new(&dir.path().join("data"));
        tweak(&mut opts);
        let stack = Stack::start(opts).await.unwrap();
        stack.mirror(&main_sha, &files);
        stack.grant("alice", Permission::Write);
        stack.grant("maria", Permission::Maintain);
        World {
            stack,
            git,
            main_sha,
            _dir: dir,
        }
    }

    /// Commit a change on `branch` (the app and config stay), mirrored into the fake.
    pub fn commit(&self, branch: &str, note: &str, extra_config: &str) -> Sha {
        let mut files = python_app_files(extra_config);
        files.push(("NOTE.txt", note.to_owned()));
        let sha = self.git.commit(branch, &files, note).unwrap();
        self.stack.mirror(&sha, &files);
        sha
    }

    pub fn env(&self, slug: &str) -> stagebot::store::EnvRecord {
        let id = EnvId {
            repo: self.stack.repo.clone(),
            slug: Slug::new(slug).unwrap(),
        };
        self.stack.app.store().env(&id).unwrap().unwrap_or_else(|| panic!("no env {slug}"))
    }

    pub fn repo(&self) -> &RepoName {
        &self.stack.repo
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_pr_gets_a_preview_then_push_redeploys_then_close_tears_down() {
    let w = World::new("").await;
    let sha1 = w.commit("feature/login", "v1", "");
    let mut pr = TestPr::new(7, "feature/login", sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();

    let env = w.env("pr-7-feature-login");
    assert_eq!(env.state, EnvState::Live, "{:?}", env.last_error);
    let (status, body) = w.stack.get(&env.url).await.unwrap();
    assert_eq!((status, body.as_str()), (200, sha1.as_str()));

    // GitHub: a transient deployment with in_progress → success carrying the URL
    let deps = w.stack.fake.deployments(w.repo(), "preview/pr-7-feature-login");
    assert_eq!(deps.len(), 1);
    assert!(deps[0].transient);
    let states: Vec<_> = deps[0].statuses.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["in_progress", "success"]);
    assert_eq!(deps[0].statuses[1].environment_url.as_deref(), Some(env.url.as_str()));
    // a commit status pending → success pointing at the preview
    let statuses = w.stack.fake.statuses(w.repo(), &sha1);
    let ours: Vec<_> = statuses.iter().filter(|s| s.context == "stagebot/preview").collect();
    assert_eq!(ours.first().map(|s| s.state.as_str()), Some("pending"));
    assert_eq!(ours.last().map(|s| s.state.as_str()), Some("success"));
    assert_eq!(ours.last().and_then(|s| s.target_url.as_deref()), Some(env.url.as_str()));
    // one sticky comment with the table
    let sticky = w.stack.sticky(7).expect("sticky comment");
    assert!(sticky.contains(&env.url), "{sticky}");
    assert!(sticky.contains(sha1.short()), "{sticky}");
    assert!(sticky.contains("live"), "{sticky}");

    // push → redeploy; the newest commit is served
    let sha2 = w.commit("feature/login", "v2", "");
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    let (status, body) = w.stack.get(&env.url).await.unwrap();
    assert_eq!((status, body.as_str()), (200, sha2.as_str()));
    assert_eq!(w.env("pr-7-feature-login").current_release, Some(2));
    let comments = w.stack.fake.comments(w.repo(), stagebot::types::PrNumber(7));
    assert_eq!(comments.iter().filter(|c| c.is_sticky()).count(), 1, "sticky edited in place");

    // close → teardown, deployment inactive, sticky says how to bring it back
    w.stack.close_pr(&mut pr, false).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.env("pr-7-feature-login").state, EnvState::Destroyed);
    let (status, _) = w.stack.get(&env.url).await.unwrap();
    assert_eq!(status, 404);
    let deps = w.stack.fake.deployments(w.repo(), "preview/pr-7-feature-login");
    assert_eq!(deps.last().and_then(|d| d.last_state()), Some("inactive"));
    let sticky = w.stack.sticky(7).unwrap();
    assert!(sticky.contains("/stage"), "{sticky}");
    assert!(sticky.contains("removed"), "{sticky}");
}
