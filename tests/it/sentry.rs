//! Sentry per environment against the in-process fake Sentry: the variables every environment
//! receives, a release and a deploy record once per live release, the new-issue count in the
//! sticky comment, and Sentry down changing nothing but that count.

use stagebot::environment::EnvState;
use stagebot::fake_sentry::{FakeIssue, FakeSentry};
use stagebot::sentry::SentrySettings;
use stagebot::slug::preview_slug;
use stagebot::testkit::{GitRepo, INSTALLATION, Stack, StackOptions, TestPr};
use stagebot::types::{EnvId, Permission, PrNumber, Sha};

use crate::support::{APP_CONFIG, APP_PY};

const DSN: &str = "https://public@o1.ingest.example.invalid/2";

fn files(note: &str, extra: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.py", APP_PY.to_owned()),
        (".github/stagebot.yml", format!("{APP_CONFIG}{extra}")),
        ("NOTE.txt", note.to_owned()),
    ]
}

struct SentryWorld {
    sentry: FakeSentry,
    stack: Stack,
    git: GitRepo,
    _dir: tempfile::TempDir,
}

impl SentryWorld {
    async fn new(server_dsn: Option<&str>, with_api: bool) -> Self {
        let sentry = FakeSentry::start("sentry-token").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (git, main_sha) = GitRepo::init(&dir.path().join("src"), &files("main", "")).unwrap();
        let mut opts = StackOptions::new(&dir.path().join("data"));
        opts.sentry = SentrySettings::from_parts(
            server_dsn.map(str::to_owned),
            with_api.then(|| sentry.token().to_owned()),
            with_api.then(|| "acme".to_owned()),
            with_api.then(|| "webapp".to_owned()),
            sentry.url(),
        )
        .unwrap();
        let stack = Stack::start(opts).await.unwrap();
        stack.mirror(&main_sha, &files("main", ""));
        stack.mirror_ref("main", &files("main", ""));
        stack.grant("alice", Permission::Write);
        SentryWorld {
            sentry,
            stack,
            git,
            _dir: dir,
        }
    }

    fn commit(&self, branch: &str, note: &str, extra: &str) -> Sha {
        let sha = self.git.commit(branch, &files(note, extra), note).unwrap();
        self.stack.mirror(&sha, &files(note, extra));
        sha
    }

    fn url(&self, n: u64, branch: &str) -> String {
        let id = EnvId {
            repo: self.stack.repo.clone(),
            slug: preview_slug(Some(PrNumber(n)), branch),
        };
        let env = self.stack.app.store().env(&id).unwrap().unwrap();
        assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
        env.url
    }

    async fn env_vars(&self, url: &str) -> String {
        let (status, body) = self.stack.get(&format!("{url}/env")).await.unwrap();
        assert_eq!(status, 200);
        body
    }

    async fn refresh_sticky(&self, n: u64) -> String {
        let client = self
            .stack
            .app
            .repo_client(Some(INSTALLATION), &self.stack.repo)
            .await
            .unwrap();
        self.stack
            .app
            .reporter()
            .refresh_sticky(&client, PrNumber(n))
            .await
            .unwrap();
        self.stack.sticky(n).unwrap()
    }
}

fn issue(title: &str, environment: &str, release: &Sha) -> FakeIssue {
    FakeIssue {
        project: "webapp".into(),
        title: title.into(),
        environment: environment.into(),
        first_release: release.to_string(),
        resolved: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_deploys_and_issue_counts_and_sentry_down_changes_only_the_count() {
    let w = SentryWorld::new(Some(DSN), true).await;
    let branch = "feature/errors";
    let sha1 = w.commit(branch, "v1", "");
    let mut pr = TestPr::new(5, branch, sha1.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();

    // the variables
    let url = w.url(5, branch);
    let vars = w.env_vars(&url).await;
    for want in [
        format!("SENTRY_DSN={DSN}"),
        "SENTRY_ENVIRONMENT=preview".to_owned(),
        format!("SENTRY_RELEASE={sha1}"),
        format!("STAGEBOT_BRANCH={branch}"),
    ] {
        assert!(vars.lines().any(|l| l == want), "{want} missing:\n{vars}");
    }

    // one release and one deploy record for the live release
    let releases = w.sentry.releases();
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(releases[0].version, sha1.as_str());
    assert_eq!(releases[0].org, "acme");
    assert_eq!(releases[0].projects, ["webapp"]);
    let deploys = w.sentry.deploys();
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    assert_eq!(deploys[0].version, sha1.as_str());
    assert_eq!(deploys[0].environment, "preview");
    assert_eq!(deploys[0].url.as_deref(), Some(url.as_str()));

    // the sticky shows the stream and the count of issues new in the live release
    let sticky = w.stack.sticky(5).unwrap();
    assert!(sticky.contains("[no new issues]("), "{sticky}");
    w.sentry.add_issue(issue("TypeError", "preview", &sha1));
    w.sentry.add_issue(issue("KeyError", "preview", &sha1));
    w.sentry.add_issue(issue("Staging only", "staging", &sha1));
    w.sentry.add_issue(FakeIssue {
        resolved: true,
        ..issue("Fixed", "preview", &sha1)
    });
    let sticky = w.refresh_sticky(5).await;
    let link = format!(
        "{}/organizations/acme/issues/?environment=preview&query=release%3A{sha1}",
        w.sentry.url()
    );
    assert!(
        sticky.contains(&format!(
            "[2 new issues]({link}) in Sentry since `{}`",
            sha1.short()
        )),
        "{sticky}"
    );
    assert!(
        w.sentry
            .issue_queries()
            .iter()
            .all(|q| q == &format!("is:unresolved firstRelease:{sha1} environment:preview")),
        "{:?}",
        w.sentry.issue_queries()
    );
    // refreshing the comment again creates no second release or deploy
    w.refresh_sticky(5).await;
    w.stack.app.reconcile().await.unwrap();
    assert_eq!(w.sentry.releases().len(), 1);
    assert_eq!(w.sentry.deploys().len(), 1);

    // a new commit: one more release and deploy
    let sha2 = w.commit(branch, "v2", "");
    w.stack.synchronize(&mut pr, sha2.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    let versions: Vec<_> = w.sentry.releases().into_iter().map(|r| r.version).collect();
    assert_eq!(versions, [sha1.to_string(), sha2.to_string()]);
    assert_eq!(w.sentry.deploys().len(), 2);
    assert!(w.stack.sticky(5).unwrap().contains("[no new issues]("));

    // Sentry down: the deploy still goes live; the count is all that changes
    w.sentry.set_down(true);
    let sha3 = w.commit(branch, "v3", "");
    w.stack.synchronize(&mut pr, sha3.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    let (status, body) = w.stack.get(&url).await.unwrap();
    assert_eq!((status, body.as_str()), (200, sha3.as_str()));
    let sticky = w.stack.sticky(5).unwrap();
    assert!(sticky.contains("✅ live"), "{sticky}");
    assert!(sticky.contains("[issues (count unavailable)]("), "{sticky}");
    assert_eq!(w.sentry.releases().len(), 2, "nothing recorded while down");
    // back up: the count comes back on the next refresh
    w.sentry.set_down(false);
    w.sentry.add_issue(issue("New in v3", "preview", &sha3));
    assert!(w.refresh_sticky(5).await.contains("[1 new issue]("));
    let failed: Vec<_> = w
        .stack
        .app
        .store()
        .deliveries()
        .unwrap()
        .into_iter()
        .filter(|d| d.last_error.is_some())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_dsn_reaches_the_app_without_any_server_setting() {
    let w = SentryWorld::new(None, false).await;
    let sha = w.commit(
        "repo-dsn",
        "v1",
        "sentry: { dsn: 'https://k@o9.example.invalid/9' }\n",
    );
    let pr = TestPr::new(6, "repo-dsn", sha.clone(), &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let vars = w.env_vars(&w.url(6, "repo-dsn")).await;
    assert!(
        vars.contains("SENTRY_DSN=https://k@o9.example.invalid/9\n"),
        "{vars}"
    );
    assert!(vars.contains("SENTRY_ENVIRONMENT=preview\n"), "{vars}");
    assert!(vars.contains(&format!("SENTRY_RELEASE={sha}\n")), "{vars}");
    // no API settings: Sentry is never called, the sticky has no error line
    assert!(w.sentry.releases().is_empty());
    assert!(w.sentry.issue_queries().is_empty());
    assert!(!w.stack.sticky(6).unwrap().contains("🐞"));

    // and without any DSN, no SENTRY_* variable at all
    let sha = w.commit("no-dsn", "v1", "");
    let pr = TestPr::new(7, "no-dsn", sha, &w.git.clone_url());
    w.stack.open_pr(&pr).await.unwrap();
    w.stack.settle().await.unwrap();
    let vars = w.env_vars(&w.url(7, "no-dsn")).await;
    assert!(!vars.contains("SENTRY_"), "{vars}");
}
