//! `stagebot demo`: the whole product on one machine with nothing else installed. A fake GitHub
//! runs in-process, a real git repository is made in a temp dir, and signed webhooks drive the
//! real server: a PR gets a preview, a push redeploys it, `/promote` fills staging, the merge
//! deploys production and removes the preview. The app it deploys is stagebot itself
//! (`stagebot demo-app`), so not even Python is needed.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::testkit::{GitRepo, Stack, StackOptions, TestPr};
use crate::types::{EnvId, Slug};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub data_dir: Option<PathBuf>,
    pub keep: bool,
    pub listen: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Kit(#[from] crate::testkit::KitError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Failed(String),
}

const APP_CONFIG: &str =
    "start: exec \"$STAGEBOT_DEMO_APP\" demo-app\nhealth: /healthz\npreview:\n  ttl: 3d\n";

fn files(greeting: &str) -> Vec<(&'static str, String)> {
    vec![
        (".github/stagebot.yml", APP_CONFIG.to_owned()),
        ("greeting.txt", format!("{greeting}\n")),
    ]
}

fn say(step: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m==> {step}\x1b[0m");
    } else {
        println!("\n==> {step}");
    }
}

/// Run the scripted flow; prints what happens.
pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    let tmp;
    let base = match &opts.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    let exe = std::env::current_exe()?;
    let main_files = files("Hello from main");
    let (git, main_sha) = GitRepo::init(&base.join("webapp-src"), &main_files)?;
    let mut stack_opts = StackOptions::new(&base.join("data"));
    stack_opts.listen = Some(opts.listen);
    // The demo runs only its own built-in app: without bwrap it runs it unsandboxed, saying so.
    if let Some(dir) = exe.parent() {
        stack_opts.sandbox.read_only.push(dir.to_path_buf());
    }
    if let Err(e) =
        crate::provider::sandbox::Sandbox::probe(&stack_opts.sandbox, &base.join("data"))
    {
        println!("warning: {e}; the demo runs its built-in app without a sandbox");
        stack_opts.sandbox.mode = crate::provider::sandbox::SandboxMode::Off;
    }
    stack_opts.vars = vec![("STAGEBOT_DEMO_APP".into(), exe.display().to_string())];
    let mut stack = Stack::start(stack_opts).await?;
    // The demo prints what it shows; it is not a test of every reply.
    stack.ignore_unread_replies();
    stack.mirror(&main_sha, &main_files);
    stack.mirror_ref("main", &main_files);
    stack.grant("alice", crate::types::Permission::Admin);
    println!(
        "stagebot demo: fake GitHub at {}, stagebot at {}",
        stack.fake.url(),
        stack.url()
    );
    println!("repository {} ({})", stack.repo, git.dir().display());

    say("alice opens PR #1 from branch feature/login-page");
    let v1 = files("Hello from the login page, v1");
    let sha1 = git.commit("feature/login-page", &v1, "Add login page")?;
    stack.mirror(&sha1, &v1);
    let mut pr = TestPr::new(1, "feature/login-page", sha1.clone(), &git.clone_url());
    pr.author = "alice".into();
    stack.open_pr(&pr).await?;
    stack.settle().await?;
    let preview_slug =
        crate::slug::preview_slug(Some(crate::types::PrNumber(1)), "feature/login-page");
    let preview = env_url(&stack, &Some(preview_slug))?;
    show(&stack, &preview).await?;
    print_sticky(&stack);

    say("alice pushes a second commit: the preview is redeployed");
    let v2 = files("Hello from the login page, v2");
    let sha2 = git.commit("feature/login-page", &v2, "Polish login page")?;
    stack.mirror(&sha2, &v2);
    stack.synchronize(&mut pr, sha2.clone()).await?;
    stack.settle().await?;
    show(&stack, &preview).await?;

    say("alice comments `/promote` to put the preview's commit on staging");
    stack.comment("alice", 1, "/promote").await?;
    stack.settle().await?;
    let staging = env_url(&stack, &Some(Slug::staging()))?;
    show(&stack, &staging).await?;

    say("alice comments `/status`");
    stack.comment("alice", 1, "/status").await?;
    stack.settle().await?;
    if let Some(reply) = stack.replies(1).last() {
        println!("{reply}");
    }

    say("PR #1 is merged: production deploys the merge commit and the preview goes away");
    let merge_sha = git.merge("feature/login-page")?;
    stack.mirror(&merge_sha, &v2);
    pr.merge_sha = Some(merge_sha.clone());
    stack.close_pr(&mut pr, true).await?;
    stack
        .push("main", &main_sha, &merge_sha, &git.clone_url())
        .await?;
    stack.settle().await?;
    let production = env_url(&stack, &Some(Slug::production()))?;
    show(&stack, &production).await?;
    let (status, _) = stack.get(&preview).await?;
    println!("{preview} now answers {status} (the preview is gone)");
    print_sticky(&stack);

    say("What GitHub received");
    for d in stack.fake.all_deployments(&stack.repo) {
        println!(
            "deployment {:>3} {:<32} {} → {}",
            d.id,
            d.environment,
            &d.sha.to_string()[..7],
            d.statuses
                .iter()
                .map(|s| s.state.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        );
    }
    println!(
        "\nDashboard: {}/   API: {}/api/environments   Metrics: {}/metrics",
        stack.url(),
        stack.url(),
        stack.url()
    );
    if opts.keep {
        println!("Serving until Ctrl-C (production is live at {production}).");
        let _ = tokio::signal::ctrl_c().await;
    }
    say("Cleaning up");
    for env in stack.app.store().envs().unwrap_or_default() {
        if env.is_active() {
            let _ = stack.app.request_teardown(&env.id, "demo finished");
        }
    }
    stack.settle().await?;
    let _fake = stack.stop().await;
    if opts.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
    println!("done.");
    Ok(())
}

fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("stagebot-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn env_url(stack: &Stack, slug: &Option<Slug>) -> Result<String, DemoError> {
    let slug = slug
        .clone()
        .ok_or_else(|| DemoError::Failed("bad slug".into()))?;
    let id = EnvId {
        repo: stack.repo.clone(),
        slug,
    };
    let env = stack
        .app
        .store()
        .env(&id)
        .map_err(|e| DemoError::Failed(e.to_string()))?
        .ok_or_else(|| DemoError::Failed(format!("no environment {id}")))?;
    println!("{} is {} at {}", id.slug, env.state().as_str(), env.url);
    if let Some(err) = &env.last_error {
        return Err(DemoError::Failed(format!("{} failed: {err}", id.slug)));
    }
    Ok(env.url)
}

async fn show(stack: &Stack, url: &str) -> Result<(), DemoError> {
    let (status, body) = stack.get(url).await?;
    println!("GET {url} → {status}: {}", body.trim());
    Ok(())
}

fn print_sticky(stack: &Stack) {
    if let Some(text) = stack.sticky(1) {
        // The command list at the end of every sticky comment is the same each time.
        let text = text
            .split("<details><summary>Commands</summary>")
            .next()
            .unwrap_or_default();
        println!(
            "--- sticky comment on PR #1 ---\n{}\n-------------------------------",
            text.trim()
        );
    }
}

/// `stagebot demo-app`: the tiny app the demo deploys. Answers `/healthz` with `ok` and anything
/// else with the environment it runs in and the repository's `greeting.txt`.
pub async fn demo_app() -> Result<(), DemoError> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| DemoError::Failed("PORT is not set".into()))?;
    let greeting = std::fs::read_to_string("greeting.txt").unwrap_or_default();
    let text = format!(
        "{} — {} at {}\n",
        greeting.trim(),
        std::env::var("STAGEBOT_ENV").unwrap_or_default(),
        std::env::var("STAGEBOT_SHA")
            .unwrap_or_default()
            .get(..7)
            .unwrap_or("?")
    );
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(move || {
            let t = text.clone();
            async move { t }
        });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    axum::serve(listener, router).await?;
    Ok(())
}
