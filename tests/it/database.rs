//! A PostgreSQL database per environment, end to end against a real PostgreSQL server (started
//! by the test in a temp dir): cloned from the snapshot, isolated from other previews, kept
//! across redeploys, `migrate` on every deploy, `lite` on staging's database, dropped with the
//! preview, and hostile branch names.

use std::time::Duration;

use stagebot::database::{Postgres, database_name};
use stagebot::environment::EnvState;
use stagebot::slug::preview_slug;
use stagebot::testkit::{GitRepo, Stack, StackOptions, TestPr};
use stagebot::types::{EnvId, Permission, PrNumber, Secret, Slug};

use crate::support::postgres::PgServer;

/// The app: `/notes` lists the `notes` table, `POST /notes` adds the body (letters, digits and
/// `_` only), `/db` says which database and role it uses, `/migrations` counts `migrate` runs,
/// `/env` shows its variables. SQL through `psql`, as many apps' tooling does.
const DB_APP: &str = r#"import http.server, os, re, subprocess
url = os.environ.get("DATABASE_URL", "")
def sql(q):
    r = subprocess.run(["psql", url, "-XqAt", "-v", "ON_ERROR_STOP=1", "-c", q], capture_output=True, text=True)
    return (r.stdout if r.returncode == 0 else "ERROR " + r.stderr).strip()
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, body):
        body = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/healthz":
            self.reply("ok")
        elif self.path == "/notes":
            self.reply(sql("SELECT string_agg(note, ',' ORDER BY id) FROM notes"))
        elif self.path == "/db":
            self.reply(sql("SELECT current_database() || ' ' || current_user"))
        elif self.path == "/migrations":
            self.reply(sql("SELECT count(*) FROM migrations_ran"))
        elif self.path == "/env":
            self.reply("\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())))
        else:
            self.reply(os.environ.get("STAGEBOT_SHA", "?"))
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        note = self.rfile.read(n).decode()
        if not re.fullmatch(r"[A-Za-z0-9_]+", note):
            return self.reply("bad note")
        self.reply(sql(f"INSERT INTO notes(note) VALUES ('{note}') RETURNING id"))
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const DB_CONFIG: &str = r#"start: exec python3 app.py
health: /healthz
migrate: psql "$DATABASE_URL" -XqAt -v ON_ERROR_STOP=1 -c "CREATE TABLE IF NOT EXISTS migrations_ran (at timestamptz DEFAULT now()); INSERT INTO migrations_ran DEFAULT VALUES"
database:
  postgres:
    snapshot: webapp_snapshot
preview:
  profiles:
    lite: { database: shared }
"#;

fn files(note: &str) -> Vec<(&'static str, String)> {
    vec![
        ("app.py", DB_APP.to_owned()),
        (".github/stagebot.yml", DB_CONFIG.to_owned()),
        ("NOTE.txt", note.to_owned()),
    ]
}

struct DbWorld {
    pg: PgServer,
    stack: Stack,
    git: GitRepo,
    _dir: tempfile::TempDir,
}

impl DbWorld {
    async fn new() -> DbWorld {
        Self::with(|_, _| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut StackOptions, &std::path::Path)) -> DbWorld {
        let pg = PgServer::start();
        // The snapshot: made by the operator as the superuser (so its objects belong to the
        // bootstrap superuser, which REASSIGN OWNED could not take them from).
        pg.admin("postgres")
            .await
            .batch_execute("CREATE DATABASE webapp_snapshot")
            .await
            .unwrap();
        {
            let snap = pg.admin("webapp_snapshot").await;
            snap.batch_execute(
                "CREATE TABLE notes (id serial PRIMARY KEY, note text NOT NULL);
                 INSERT INTO notes (note) VALUES ('from_the_snapshot');
                 CREATE VIEW note_count AS SELECT count(*) FROM notes;",
            )
            .await
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let (git, main_sha) = GitRepo::init(&dir.path().join("src"), &files("main")).unwrap();
        let mut opts = StackOptions::new(&dir.path().join("data"));
        opts.postgres =
            Some(Postgres::new(&pg.admin_url(), Secret::new("postgres-test-secret"), "").unwrap());
        tweak(&mut opts, dir.path());
        let stack = Stack::start(opts).await.unwrap();
        stack.mirror(&main_sha, &files("main"));
        stack.mirror_ref("main", &files("main"));
        stack.grant("alice", Permission::Write);
        DbWorld {
            pg,
            stack,
            git,
            _dir: dir,
        }
    }

    fn commit(&self, branch: &str, note: &str) -> stagebot::types::Sha {
        let sha = self.git.commit(branch, &files(note), note).unwrap();
        self.stack.mirror(&sha, &files(note));
        sha
    }

    async fn open(&self, n: u64, branch: &str) -> TestPr {
        let sha = self.commit(branch, &format!("pr{n}"));
        let pr = TestPr::new(n, branch, sha, &self.git.clone_url());
        self.stack.open_pr(&pr).await.unwrap();
        self.stack.settle().await.unwrap();
        pr
    }

    fn env(&self, slug: &Slug) -> stagebot::environment::EnvRecord {
        let id = EnvId {
            repo: self.stack.repo.clone(),
            slug: slug.clone(),
        };
        self.stack.app.store().env(&id).unwrap().unwrap()
    }

    fn live_url(&self, slug: &Slug) -> String {
        let env = self.env(slug);
        assert_eq!(env.state(), EnvState::Live, "{slug}: {:?}", env.last_error);
        env.url
    }

    async fn get(&self, slug: &Slug, path: &str) -> String {
        let (status, body) = self
            .stack
            .get(&format!("{}{path}", self.live_url(slug)))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn post(&self, slug: &Slug, path: &str, body: &str) -> String {
        let url = format!("{}{path}", self.live_url(slug));
        let parsed = reqwest::Url::parse(&url).unwrap();
        let client = reqwest::Client::builder()
            .resolve(parsed.host_str().unwrap(), self.stack.addr)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let resp = client
            .post(&url)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }

    /// The database URL the environment's processes received.
    async fn database_url(&self, slug: &Slug) -> String {
        let env = self.get(slug, "/env").await;
        env.lines()
            .find_map(|l| l.strip_prefix("DATABASE_URL="))
            .unwrap_or_else(|| panic!("no DATABASE_URL in {env}"))
            .to_owned()
    }
}

fn slug_of(n: u64, branch: &str) -> Slug {
    preview_slug(Some(PrNumber(n)), branch)
}

/// `postgresql://role:password@host:port/db` → (role, password).
fn credentials(url: &str) -> (String, String) {
    let auth = url
        .strip_prefix("postgresql://")
        .and_then(|r| r.split_once('@'))
        .map(|(a, _)| a)
        .unwrap_or_else(|| panic!("unexpected URL {url}"));
    let (user, pw) = auth.split_once(':').unwrap();
    (user.to_owned(), pw.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_preview_gets_its_own_database_from_the_snapshot_and_loses_it_at_teardown() {
    let w = DbWorld::new().await;
    let repo = w.stack.repo.clone();
    let mut pr1 = w.open(1, "feature-a").await;
    let (s1, db1) = (
        slug_of(1, "feature-a"),
        database_name(&repo, &slug_of(1, "feature-a")),
    );

    // the app reads the snapshot's row from a database of its own, as a role of its own
    assert_eq!(w.get(&s1, "/notes").await, "from_the_snapshot");
    assert_eq!(w.get(&s1, "/db").await, format!("{db1} {db1}"));
    assert_eq!(w.get(&s1, "/migrations").await, "1", "migrate ran once");
    assert!(w.pg.databases().await.contains(&db1));
    assert!(w.pg.roles().await.contains(&db1));
    assert_eq!(w.post(&s1, "/notes", "written_by_pr1").await, "2");
    assert_eq!(
        w.get(&s1, "/notes").await,
        "from_the_snapshot,written_by_pr1"
    );

    // a second preview starts from the snapshot again: the first one's write is not there
    let _pr2 = w.open(2, "feature-b").await;
    let s2 = slug_of(2, "feature-b");
    let db2 = database_name(&repo, &s2);
    assert_eq!(w.get(&s2, "/notes").await, "from_the_snapshot");
    assert_eq!(w.post(&s2, "/notes", "written_by_pr2").await, "2");
    assert_eq!(
        w.get(&s1, "/notes").await,
        "from_the_snapshot,written_by_pr1"
    );
    // the snapshot itself is untouched
    let snap_rows: i64 =
        w.pg.admin("webapp_snapshot")
            .await
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(snap_rows, 1);

    // one environment's role cannot open another's database; its own works
    let (user2, pw2) = credentials(&w.database_url(&s2).await);
    assert_eq!(user2, db2);
    let denied = w.pg.connect_as(&db1, &user2, &pw2).await;
    let message = denied
        .err()
        .map(|e| match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        })
        .unwrap_or_default();
    assert!(
        message.contains("permission denied"),
        "role {user2} opened {db1}: {message}"
    );
    let own = w.pg.connect_as(&db2, &user2, &pw2).await.unwrap();
    let owner: String = own
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'notes'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        owner, db2,
        "the cloned objects belong to the environment's role"
    );
    drop(own);

    // a redeploy keeps the database; migrate runs again
    let sha = w.commit("feature-a", "pr1 v2");
    w.stack.synchronize(&mut pr1, sha.clone()).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.get(&s1, "/").await, sha.as_str());
    assert_eq!(
        w.get(&s1, "/notes").await,
        "from_the_snapshot,written_by_pr1"
    );
    assert_eq!(w.get(&s1, "/migrations").await, "2");

    // closing the PR drops the database and the role; the other preview's stay
    w.stack.close_pr(&mut pr1, false).await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(w.env(&s1).state(), EnvState::Destroyed);
    assert!(!w.pg.databases().await.contains(&db1));
    assert!(!w.pg.roles().await.contains(&db1));
    assert!(w.pg.databases().await.contains(&db2));
    assert!(w.pg.roles().await.contains(&db2));
    assert!(
        w.pg.databases()
            .await
            .contains(&"webapp_snapshot".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite_previews_use_staging_and_hostile_branches_create_nothing_unexpected() {
    let w = DbWorld::new().await;
    let repo = w.stack.repo.clone();
    let before = w.pg.databases().await;

    // staging gets its database (promoted from a preview)
    let mut pr1 = w.open(1, "base").await;
    w.stack.comment("alice", 1, "/promote").await.unwrap();
    w.stack.settle().await.unwrap();
    let staging_db = database_name(&repo, &Slug::staging());
    assert!(staging_db.starts_with("webapp_staging_"), "{staging_db}");
    assert_eq!(
        w.get(&Slug::staging(), "/db").await,
        format!("{staging_db} {staging_db}")
    );
    assert_eq!(
        w.post(&Slug::staging(), "/notes", "staging_data").await,
        "2"
    );

    // a lite preview runs against staging's database and creates none
    let sha = w.commit("lite-branch", "lite");
    let mut lite = TestPr::new(3, "lite-branch", sha, &w.git.clone_url());
    lite.draft = true;
    w.stack.open_pr(&lite).await.unwrap();
    w.stack.comment("alice", 3, "/stage lite").await.unwrap();
    w.stack.settle().await.unwrap();
    let s3 = slug_of(3, "lite-branch");
    assert_eq!(
        w.get(&s3, "/db").await,
        format!("{staging_db} {staging_db}")
    );
    assert_eq!(w.get(&s3, "/notes").await, "from_the_snapshot,staging_data");
    assert!(!w.pg.databases().await.contains(&database_name(&repo, &s3)));
    // tearing the lite preview down leaves staging's database alone
    w.stack.close_pr(&mut lite, false).await.unwrap();
    w.stack.settle().await.unwrap();
    assert!(w.pg.databases().await.contains(&staging_db));
    assert!(w.pg.roles().await.contains(&staging_db));

    // a branch name full of quotes and semicolons: one database with a clean name, nothing else
    let hostile = "x'\";DROP-DATABASE-webapp_snapshot;--\"'";
    let _pr4 = w.open(4, hostile).await;
    let s4 = slug_of(4, hostile);
    let db4 = database_name(&repo, &s4);
    assert!(
        db4.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "{db4}"
    );
    assert_eq!(w.get(&s4, "/notes").await, "from_the_snapshot");
    let env = w.get(&s4, "/env").await;
    assert!(env.contains(&format!("STAGEBOT_BRANCH={hostile}")), "{env}");
    let mut expected: Vec<String> = before.clone();
    expected.extend([
        database_name(&repo, &slug_of(1, "base")),
        staging_db.clone(),
        db4.clone(),
    ]);
    expected.sort();
    assert_eq!(w.pg.databases().await, expected);

    // staging is never dropped; closing everything leaves it and the snapshot
    w.stack.close_pr(&mut pr1, false).await.unwrap();
    w.stack.settle().await.unwrap();
    let left = w.pg.databases().await;
    assert!(left.contains(&staging_db), "{left:?}");
    assert!(left.contains(&"webapp_snapshot".to_owned()), "{left:?}");
    assert!(!left.contains(&database_name(&repo, &slug_of(1, "base"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_refreshes_from_staging_through_the_admin_socket_and_anonymizes_the_copy() {
    let w = DbWorld::new().await;
    let repo = w.stack.repo.clone();
    // the anonymize script lives on the default branch, next to the config that names it
    let config = DB_CONFIG.replace(
        "    snapshot: webapp_snapshot\n",
        "    snapshot: webapp_snapshot\n    anonymize: db/anonymize.sql\n",
    );
    w.stack.mirror_ref(
        "main",
        &[
            (".github/stagebot.yml", config.as_str()),
            (
                "db/anonymize.sql",
                "UPDATE notes SET note = 'anonymized' WHERE note LIKE 'customer_%';",
            ),
        ],
    );
    let _pr = w.open(1, "base").await;
    w.stack.comment("alice", 1, "/promote").await.unwrap();
    w.stack.settle().await.unwrap();
    assert_eq!(
        w.post(&Slug::staging(), "/notes", "customer_jane").await,
        "2"
    );

    // `stagebot snapshot acme/webapp --from staging` goes through the admin socket
    let sock = stagebot::serve::admin_socket(&w.stack.app.settings().data_dir);
    let answer = stagebot::admin::call(
        &sock,
        "POST",
        "/admin/snapshot",
        Some(serde_json::json!({ "repo": repo.to_string(), "from": "staging" })),
    )
    .await
    .unwrap();
    assert_eq!(answer["snapshot"], "webapp_snapshot", "{answer}");
    assert_eq!(
        answer["from"],
        database_name(&repo, &Slug::staging()).as_str(),
        "{answer}"
    );
    // staging keeps serving (its connections were closed for the copy, new ones work)
    assert_eq!(
        w.get(&Slug::staging(), "/notes").await,
        "from_the_snapshot,customer_jane"
    );
    // the next preview starts from the refreshed, anonymized snapshot
    let _pr2 = w.open(2, "next").await;
    assert_eq!(
        w.get(&slug_of(2, "next"), "/notes").await,
        "from_the_snapshot,anonymized"
    );
    let left = w.pg.databases().await;
    assert!(
        !left.contains(&"webapp_snapshot_next".to_owned()),
        "{left:?}"
    );

    // a snapshot outside the repository's names is refused before anything runs
    w.stack.mirror_ref(
        "main",
        &[(
            ".github/stagebot.yml",
            DB_CONFIG
                .replace("webapp_snapshot", "billing_snapshot")
                .as_str(),
        )],
    );
    let refused = stagebot::admin::call(
        &sock,
        "POST",
        "/admin/snapshot",
        Some(serde_json::json!({ "repo": repo.to_string() })),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("must start with `webapp_`"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_providers_deploy_script_receives_the_database_url() {
    use std::os::unix::fs::PermissionsExt;
    let w = DbWorld::with(|opts, dir| {
        let out = dir.join("script-env");
        std::fs::create_dir_all(&out).unwrap();
        let deploy = dir.join("deploy.sh");
        std::fs::write(
            &deploy,
            format!(
                "#!/bin/sh\nenv > '{}/'\"$STAGEBOT_SLUG\".env\necho \"url=https://$STAGEBOT_SLUG.example.invalid\"\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&deploy, std::fs::Permissions::from_mode(0o755)).unwrap();
        opts.command_provider = Some(stagebot::provider::command::CommandConfig {
            deploy_cmd: deploy,
            teardown_cmd: None,
            status_cmd: None,
            timeout: Duration::from_secs(20),
        });
    })
    .await;
    let repo = w.stack.repo.clone();
    let mut pr = w.open(8, "scripted").await;
    let slug = slug_of(8, "scripted");
    let db = database_name(&repo, &slug);
    assert_eq!(
        w.env(&slug).state(),
        EnvState::Live,
        "{:?}",
        w.env(&slug).last_error
    );
    let env = std::fs::read_to_string(w._dir.path().join("script-env").join(format!("{slug}.env")))
        .unwrap();
    let url = env
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .unwrap_or_else(|| panic!("no DATABASE_URL for the script:\n{env}"));
    assert!(
        url.starts_with(&format!("postgresql://{db}:")) && url.ends_with(&format!("/{db}")),
        "{url}"
    );
    // the script (or its migrations) can use it: the snapshot's row is there
    let (user, pw) = credentials(url);
    let client = w.pg.connect_as(&db, &user, &pw).await.unwrap();
    let note: String = client
        .query_one("SELECT note FROM notes ORDER BY id LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "from_the_snapshot");
    drop(client);
    // teardown (no teardown script) still drops the database and the role
    w.stack.close_pr(&mut pr, false).await.unwrap();
    w.stack.settle().await.unwrap();
    assert!(!w.pg.databases().await.contains(&db));
    assert!(!w.pg.roles().await.contains(&db));
}
