//! The local and command providers and the built-in proxy, end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stagebot::provider::{
    CommandConfig, CommandProvider, Provider, ProviderError, ProviderStatus, TeardownSpec,
};
use stagebot::types::Secret;

use crate::support::*;

fn teardown_spec(spec: &stagebot::provider::DeploySpec) -> TeardownSpec {
    TeardownSpec {
        env: spec.env.clone(),
        kind: spec.kind,
        branch: spec.branch.clone(),
        sha: Some(spec.sha.clone()),
        pr: spec.pr,
        log_path: spec.log_path.with_file_name("teardown.log"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_route_redeploy_without_downtime_then_teardown() {
    let repo = TestRepo::new();
    let data = tempfile::tempdir().unwrap();
    let proxy = ProxyServer::start().await;
    let provider = local_provider(data.path(), &proxy.routes);
    let host = proxy.host("pr-7-login--webapp");
    let client = proxy.client(&[&host]);

    // First release.
    let sha1 = repo.commit_app(APP_CONFIG);
    let spec1 = spec(&repo, data.path(), "pr-7-login", &host, &sha1, 1);
    let t = Instant::now();
    let deployed = provider.deploy(&spec1).await.expect("first deploy");
    eprintln!(
        "measure: first deploy (clone + start + healthy) {:?}",
        t.elapsed()
    );
    assert_eq!(deployed.url, format!("http://{host}"));
    assert_eq!(
        get(&client, &host, "/").await.unwrap(),
        (200, sha1.to_string())
    );
    assert_eq!(
        provider.status(&spec1.env),
        ProviderStatus::Running {
            url: deployed.url.clone()
        }
    );
    let old_pgid = pgid_of(data.path(), "pr-7-login", 1).expect("pgid file of r1");
    assert!(alive(old_pgid));

    // Poll through the proxy during the redeploy: not a single failed request.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let poller = {
        let (stop, ok, failed, client, host) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            client.clone(),
            host.clone(),
        );
        tokio::spawn(async move {
            let mut bodies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match get(&client, &host, "/").await {
                    Ok((200, body)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if bodies.last() != Some(&body) {
                            bodies.push(body);
                        }
                    }
                    other => {
                        eprintln!("failed request during redeploy: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            bodies
        })
    };
    let sha2 = repo.commit(&[("README", Some("second"))]);
    let mut spec2 = spec(&repo, data.path(), "pr-7-login", &host, &sha2, 2);
    spec2.previous_sha = Some(sha1.clone());
    let t = Instant::now();
    provider.deploy(&spec2).await.expect("second deploy");
    eprintln!(
        "measure: redeploy (fetch + start + healthy + switch + drain + stop) {:?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let bodies = poller.await.unwrap();
    eprintln!(
        "measure: {} requests served during the redeploy, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the redeploy"
    );
    assert_eq!(
        bodies,
        [sha1.to_string(), sha2.to_string()],
        "served sha1, then sha2, nothing else"
    );
    assert_eq!(
        get(&client, &host, "/").await.unwrap(),
        (200, sha2.to_string())
    );
    // The old release is retired in the background, after the drain.
    eventually(
        "the previous release's process to be gone",
        Duration::from_secs(10),
        || !alive(old_pgid),
    )
    .await;
    let old_checkout = data.path().join("envs/acme/webapp/pr-7-login/r1");
    eventually(
        "the old checkout to be removed",
        Duration::from_secs(10),
        || !old_checkout.exists(),
    )
    .await;

    // The app got the STAGEBOT_* variables.
    let (_, env) = get(&client, &host, "/env").await.unwrap();
    for line in [
        format!("STAGEBOT_SHA={sha2}"),
        "STAGEBOT_SLUG=pr-7-login".to_owned(),
        "STAGEBOT_KIND=preview".to_owned(),
        "STAGEBOT_BRANCH=feature/login".to_owned(),
        "STAGEBOT_PR=7".to_owned(),
        "STAGEBOT_RELEASE=2".to_owned(),
        format!("STAGEBOT_PREVIOUS_SHA={sha1}"),
        "STAGEBOT_ENV=preview/pr-7-login".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
    }

    // Teardown frees the port and removes the route.
    let upstream = proxy.routes.get(&host).expect("routed");
    provider
        .teardown(&teardown_spec(&spec2))
        .await
        .expect("teardown");
    assert_eq!(proxy.routes.get(&host), None);
    assert!(
        tokio::net::TcpStream::connect(upstream).await.is_err(),
        "port {upstream} still open"
    );
    assert_eq!(provider.status(&spec2.env), ProviderStatus::Stopped);
    assert!(!data.path().join("envs/acme/webapp/pr-7-login").exists());
    let (status, body) = get(&client, &host, "/").await.unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("no live environment"), "{body}");
    // Tearing down again is fine.
    provider
        .teardown(&teardown_spec(&spec2))
        .await
        .expect("second teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_the_old_release_serving() {
    let repo = TestRepo::new();
    let data = tempfile::tempdir().unwrap();
    let proxy = ProxyServer::start().await;
    let provider = local_provider(data.path(), &proxy.routes);
    let host = proxy.host("pr-7-x--webapp");
    let client = proxy.client(&[&host]);
    let sha1 = repo.commit_app(APP_CONFIG);
    provider
        .deploy(&spec(&repo, data.path(), "pr-7-x", &host, &sha1, 1))
        .await
        .expect("deploy");

    // A failing build.
    let bad_build = repo.commit_app(&format!(
        "build: echo compiling things; echo oops >&2; exit 3\n{APP_CONFIG}"
    ));
    let err = provider
        .deploy(&spec(&repo, data.path(), "pr-7-x", &host, &bad_build, 2))
        .await
        .unwrap_err();
    let ProviderError::Deploy { message, log_tail } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(message, "`build` failed: exited with status 3");
    assert!(
        log_tail.contains("compiling things") && log_tail.contains("oops"),
        "{log_tail}"
    );
    assert_eq!(
        get(&client, &host, "/").await.unwrap(),
        (200, sha1.to_string())
    );

    // A start that never answers: fails after the (short) health timeout, its process killed.
    let token = unique_token();
    let never = repo.commit_app(&format!(
        "start: echo starting up; exec sleep 60.{token}\ntimeouts: {{ health: 1s }}\n"
    ));
    let t = Instant::now();
    let err = provider
        .deploy(&spec(&repo, data.path(), "pr-7-x", &host, &never, 3))
        .await
        .unwrap_err();
    let ProviderError::Deploy { message, log_tail } = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("did not become healthy within 1s"),
        "{message}"
    );
    assert!(log_tail.contains("starting up"), "{log_tail}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    eventually(
        "the unhealthy start to be killed",
        Duration::from_secs(3),
        || processes_with(&format!("sleep 60.{token}")).is_empty(),
    )
    .await;
    assert_eq!(
        get(&client, &host, "/").await.unwrap(),
        (200, sha1.to_string())
    );

    // A start that exits at once fails at once with its status.
    let crash = repo.commit_app("start: echo crashing; exit 7\n");
    let t = Instant::now();
    let err = provider
        .deploy(&spec(&repo, data.path(), "pr-7-x", &host, &crash, 4))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        err.to_string().contains("`start` exited with status 7"),
        "{err}"
    );
    assert!(err.log_tail().unwrap().contains("crashing"));

    // A build that runs too long is killed.
    let slow = repo.commit_app(&format!(
        "build: sleep 60\ntimeouts: {{ build: 1s }}\n{APP_CONFIG}"
    ));
    let err = provider
        .deploy(&spec(&repo, data.path(), "pr-7-x", &host, &slow, 5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Timeout { step, .. } if step == "build"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "build timed out after 1s");

    // Configuration problems are explained.
    let no_start = repo.commit(&[(".github/stagebot.yml", None)]);
    let err = provider
        .deploy(&spec(&repo, data.path(), "pr-7-x", &host, &no_start, 6))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("no `start` command: add .github/stagebot.yml"),
        "{err}"
    );
    let typo = repo.commit_app("biuld: make\nstart: python3 app.py\n");
    let err = provider
        .deploy(&spec(&repo, data.path(), "pr-7-x", &host, &typo, 7))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown key `biuld` at line 1"),
        "{err}"
    );

    // An unknown commit is a git error.
    let missing = stagebot::types::Sha::new(&"ab".repeat(20)).unwrap();
    let err = provider
        .deploy(&spec(&repo, data.path(), "pr-7-x", &host, &missing, 8))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Git(_)), "{err:?}");

    // Through all of this, release 1 kept serving.
    assert_eq!(
        get(&client, &host, "/").await.unwrap(),
        (200, sha1.to_string())
    );
    assert!(matches!(
        provider.status(&spec(&repo, data.path(), "pr-7-x", &host, &sha1, 1).env),
        ProviderStatus::Running { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_branch_names_reach_processes_only_as_variables() {
    let repo = TestRepo::new();
    let data = tempfile::tempdir().unwrap();
    let proxy = ProxyServer::start().await;
    let provider = local_provider(data.path(), &proxy.routes);
    let tag = format!("{:016x}", fastrand::u64(..));
    let pwned = [format!("/tmp/pwned-{tag}"), format!("/tmp/pwned2-{tag}")];
    let sha = repo.commit_app(&format!(
        "build: echo \"building\"\nseed: echo \"seeding $STAGEBOT_BRANCH\"\n{APP_CONFIG}"
    ));
    for (i, branch) in [
        format!("x;touch${{IFS}}{}", pwned[0]),
        format!("$(touch {})`id`", pwned[1]),
    ]
    .into_iter()
    .enumerate()
    {
        let slug = format!("hostile-{i}");
        let host = proxy.host(&format!("{slug}--webapp"));
        let client = proxy.client(&[&host]);
        let mut s = spec(&repo, data.path(), &slug, &host, &sha, 1);
        s.branch = branch.clone();
        s.vars.insert(
            "TITLE".to_owned(),
            "'; touch /tmp/pwned-title; '".to_owned(),
        );
        provider.deploy(&s).await.expect("deploy");
        let (_, env) = get(&client, &host, "/env").await.unwrap();
        assert!(
            env.lines()
                .any(|l| l == format!("STAGEBOT_BRANCH={branch}")),
            "{env}"
        );
        let log = std::fs::read_to_string(&s.log_path).unwrap();
        assert!(log.contains(&format!("seeding {branch}")), "{log}");
        provider.teardown(&teardown_spec(&s)).await.unwrap();
    }
    for p in &pwned {
        assert!(
            !std::path::Path::new(p).exists(),
            "{p} was created: a branch name was executed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_deploy_kills_its_build() {
    let repo = TestRepo::new();
    let data = tempfile::tempdir().unwrap();
    let proxy = ProxyServer::start().await;
    let provider = local_provider(data.path(), &proxy.routes);
    let host = proxy.host("pr-7-drop--webapp");
    let token = unique_token();
    let sha = repo.commit_app(&format!("build: sleep 60.{token} & wait\n{APP_CONFIG}"));
    let s = spec(&repo, data.path(), "pr-7-drop", &host, &sha, 1);
    let task = {
        let (provider, s) = (provider.clone(), s.clone());
        tokio::spawn(async move { provider.deploy(&s).await })
    };
    // The build's shell (its command line holds the whole command) and its `sleep` child.
    let is_sleep = |c: &String| c.starts_with("sleep ");
    eventually("the build to start", Duration::from_secs(10), || {
        let p = processes_with(&format!("sleep 60.{token}"));
        p.iter().any(|(_, c)| is_sleep(c)) && p.iter().any(|(_, c)| !is_sleep(c))
    })
    .await;
    task.abort(); // drops the deploy future mid-build
    assert!(task.await.unwrap_err().is_cancelled());
    eventually(
        "the build's shell and child to die",
        Duration::from_secs(3),
        || processes_with(&format!("sleep 60.{token}")).is_empty(),
    )
    .await;
    assert_eq!(proxy.routes.get(&host), None);

    // The environment is not wedged: the next deploy works and reuses the cached clone.
    let fixed = repo.commit_app(APP_CONFIG);
    provider
        .deploy(&spec(&repo, data.path(), "pr-7-drop", &host, &fixed, 2))
        .await
        .expect("deploy after cancel");
    let client = proxy.client(&[&host]);
    assert_eq!(
        get(&client, &host, "/").await.unwrap(),
        (200, fixed.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_after_a_restart_reuses_the_cache_and_clears_orphans() {
    let repo = TestRepo::new();
    let data = tempfile::tempdir().unwrap();
    let proxy = ProxyServer::start().await;
    let host = proxy.host("staging--webapp");
    let client = proxy.client(&[&host]);
    let sha = repo.commit_app(APP_CONFIG);
    let s = spec(&repo, data.path(), "staging", &host, &sha, 3);

    // stagebot "crashes": its state is lost without running any destructor.
    let first = local_provider(data.path(), &proxy.routes);
    first.deploy(&s).await.expect("deploy");
    let orphan = pgid_of(data.path(), "staging", 3).unwrap();
    std::mem::forget(first);
    proxy.routes.remove(&host);
    assert!(alive(orphan));

    // A fresh stagebot knows nothing; the lifecycle deploys the live release again.
    let second = local_provider(data.path(), &proxy.routes);
    assert_eq!(second.status(&s.env), ProviderStatus::Stopped);
    let t = Instant::now();
    second
        .deploy(&s)
        .await
        .expect("redeploy of the same release");
    eprintln!(
        "measure: redeploy of a cached commit after restart {:?}",
        t.elapsed()
    );
    assert_eq!(
        get(&client, &host, "/").await.unwrap(),
        (200, sha.to_string())
    );
    eventually(
        "the orphan of the crashed run to be killed",
        Duration::from_secs(3),
        || !alive(orphan),
    )
    .await;
    let log = std::fs::read_to_string(&s.log_path).unwrap();
    assert!(log.contains("already in the cache"), "{log}");

    // A clean shutdown (dropping the provider) stops what it started.
    let pgid = pgid_of(data.path(), "staging", 3).unwrap();
    drop(second);
    eventually(
        "processes to stop with the provider",
        Duration::from_secs(3),
        || !alive(pgid),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_headers_and_bodies_and_explains_failures() {
    let repo = TestRepo::new();
    let data = tempfile::tempdir().unwrap();
    let proxy = ProxyServer::start().await;
    let provider = local_provider(data.path(), &proxy.routes);
    let host = proxy.host("pr-7-p--webapp");
    let dead = proxy.host("pr-8-dead--webapp");
    let unrouted = proxy.host("pr-9-gone--webapp");
    let own = format!("localhost:{}", proxy.addr.port());
    let client = proxy.client(&[&host, &dead, &unrouted, &own]);
    let sha = repo.commit_app(APP_CONFIG);
    provider
        .deploy(&spec(&repo, data.path(), "pr-7-p", &host, &sha, 1))
        .await
        .expect("deploy");

    let (status, headers) = get(&client, &host, "/headers?a=1&b=two").await.unwrap();
    assert_eq!(status, 200);
    assert!(headers.starts_with("/headers?a=1&b=two\n"), "{headers}");
    assert!(
        headers.contains(&format!("x-forwarded-host: {host}")),
        "{headers}"
    );
    assert!(headers.contains("x-forwarded-for: 127.0.0.1"), "{headers}");
    assert!(headers.contains("x-forwarded-proto: http"), "{headers}");

    let body = "x".repeat(300_000);
    let resp = client
        .post(format!("http://{host}/"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), body);

    // A route to nothing: 502 with an explanation.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    proxy.routes.set(&dead, closed);
    let (status, text) = get(&client, &dead, "/").await.unwrap();
    assert_eq!(status, 502);
    assert!(text.contains("is not answering"), "{text}");

    // A preview-looking host without a route: 404. stagebot's own host: its own routes.
    let (status, text) = get(&client, &unrouted, "/").await.unwrap();
    assert_eq!(
        (status, text.contains("no live environment")),
        (404, true),
        "{text}"
    );
    assert_eq!(
        get(&client, &own, "/__stagebot").await.unwrap(),
        (200, "stagebot itself".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// The command provider.

struct Scripts {
    dir: tempfile::TempDir,
}

impl Scripts {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn provider(&self, deploy: &str, timeout: Duration) -> Provider {
        Provider::Command(CommandProvider::new(CommandConfig {
            deploy_cmd: self.write("deploy", deploy),
            teardown_cmd: Some(self.write("teardown", "echo \"tearing down $STAGEBOT_SLUG\"")),
            status_cmd: Some(self.write(
                "status",
                "echo state=running; echo \"url=https://$STAGEBOT_SLUG.example.dev\"",
            )),
            timeout,
        }))
    }
}

fn command_spec(data: &std::path::Path) -> stagebot::provider::DeploySpec {
    let repo_path = data.join("no-repo-needed");
    let mut s = spec_for_command(&repo_path, data);
    s.clone_url = "https://github.com/acme/webapp.git".to_owned();
    s.clone_token = Some(Secret::new("ghs_test_token"));
    s
}

fn spec_for_command(
    _repo: &std::path::Path,
    data: &std::path::Path,
) -> stagebot::provider::DeploySpec {
    stagebot::provider::DeploySpec {
        env: stagebot::types::EnvId {
            repo: "acme/webapp".parse().unwrap(),
            slug: "pr-7-login".parse().unwrap(),
        },
        kind: stagebot::types::EnvKind::Preview,
        branch: "feature/login".to_owned(),
        sha: stagebot::types::Sha::new(&"c".repeat(40)).unwrap(),
        pr: Some(stagebot::types::PrNumber(7)),
        release: 4,
        previous_sha: Some(stagebot::types::Sha::new(&"b".repeat(40)).unwrap()),
        clone_url: String::new(),
        clone_token: None,
        host: "pr-7-login--webapp.example.dev".to_owned(),
        public_url: "https://pr-7-login--webapp.example.dev".to_owned(),
        profile: Some("lite".to_owned()),
        first_deploy: false,
        vars: [("EXTRA".to_owned(), "from operator".to_owned())].into(),
        log_path: data.join("logs/r4.log"),
        artifact: "staging-2".to_owned(),
    }
}

#[tokio::test]
async fn command_provider_contract() {
    let scripts = Scripts::new();
    let data = tempfile::tempdir().unwrap();
    let seen = data.path().join("seen.env");
    let provider = scripts.provider(
        &format!(
            "env | grep -E '^(STAGEBOT_|EXTRA=|WEBHOOK_SECRET)' | sort > '{}'\n\
             echo url=https://first.example.dev\necho progress >&2\necho \"url=https://$STAGEBOT_SLUG.example.dev\"",
            seen.display()
        ),
        Duration::from_secs(10),
    );
    assert_eq!(provider.name(), "command");
    let s = command_spec(data.path());
    let deployed = provider.deploy(&s).await.expect("deploy");
    assert_eq!(
        deployed.url, "https://pr-7-login.example.dev",
        "the last url= wins"
    );
    let seen = std::fs::read_to_string(seen).unwrap();
    for line in [
        "STAGEBOT_SLUG=pr-7-login".to_owned(),
        "STAGEBOT_RELEASE=4".to_owned(),
        "STAGEBOT_ARTIFACT=staging-2".to_owned(),
        format!("STAGEBOT_PREVIOUS_SHA={}", "b".repeat(40)),
        format!("STAGEBOT_SHA={}", "c".repeat(40)),
        "STAGEBOT_CLONE_URL=https://github.com/acme/webapp.git".to_owned(),
        "STAGEBOT_CLONE_TOKEN=ghs_test_token".to_owned(),
        "STAGEBOT_PROFILE=lite".to_owned(),
        "STAGEBOT_FIRST_DEPLOY=0".to_owned(),
        format!("STAGEBOT_LOG={}", s.log_path.display()),
        "EXTRA=from operator".to_owned(),
    ] {
        assert!(
            seen.lines().any(|l| l == line),
            "{line} missing from\n{seen}"
        );
    }
    let log = std::fs::read_to_string(&s.log_path).unwrap();
    assert!(
        log.contains("progress") && log.contains("url=https://first.example.dev"),
        "{log}"
    );
    assert!(
        !log.contains("ghs_test_token"),
        "the token must not be logged"
    );

    // Without a token, no STAGEBOT_CLONE_TOKEN at all.
    let mut no_token = s.clone();
    no_token.clone_token = None;
    let check = scripts.provider(
        "test -z \"${STAGEBOT_CLONE_TOKEN+set}\" || exit 9\necho url=http://ok",
        Duration::from_secs(10),
    );
    check.deploy(&no_token).await.expect("no token variable");

    // teardown and status scripts.
    provider
        .teardown(&teardown_spec(&s))
        .await
        .expect("teardown");
    let tlog = std::fs::read_to_string(s.log_path.with_file_name("teardown.log")).unwrap();
    assert!(tlog.contains("tearing down pr-7-login"), "{tlog}");
    assert_eq!(
        provider.status(&s.env).await.unwrap(),
        ProviderStatus::Running {
            url: "https://pr-7-login.example.dev".to_owned()
        }
    );
}

#[tokio::test]
async fn command_provider_failures() {
    let scripts = Scripts::new();
    let data = tempfile::tempdir().unwrap();
    let s = command_spec(data.path());

    let failing = scripts.provider(
        "echo applying manifests\necho 'error: quota exceeded' >&2\nexit 4",
        Duration::from_secs(10),
    );
    let err = failing.deploy(&s).await.unwrap_err();
    let ProviderError::Deploy { message, log_tail } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(message, "deploy script exited with status 4");
    assert!(
        log_tail.contains("applying manifests") && log_tail.contains("quota exceeded"),
        "{log_tail}"
    );

    let silent = scripts.provider("echo deployed, but where?", Duration::from_secs(10));
    let err = silent.deploy(&s).await.unwrap_err();
    assert!(matches!(err, ProviderError::Deploy { .. }), "{err:?}");
    assert!(err.to_string().contains("printed no `url=` line"), "{err}");

    let bad_url = scripts.provider("echo 'url=javascript:alert(1)'", Duration::from_secs(10));
    let err = bad_url.deploy(&s).await.unwrap_err();
    assert!(err.to_string().contains("not an http(s) URL"), "{err}");

    let pidfile = data.path().join("slow.pid");
    let slow = scripts.provider(
        &format!("echo $$ > '{}'\nsleep 60 &\nwait", pidfile.display()),
        Duration::from_millis(700),
    );
    let t = Instant::now();
    let err = slow.deploy(&s).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(err.to_string(), "deploy script timed out after 700ms");
    let pid = read_pid(&pidfile).await;
    eventually(
        "the timed-out script to be killed",
        Duration::from_secs(3),
        || !alive(pid),
    )
    .await;

    let missing = Provider::Command(CommandProvider::new(CommandConfig {
        deploy_cmd: data.path().join("does-not-exist"),
        teardown_cmd: None,
        status_cmd: None,
        timeout: Duration::from_secs(1),
    }));
    let err = missing.deploy(&s).await.unwrap_err();
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
    assert_eq!(
        missing.status(&s.env).await.unwrap(),
        ProviderStatus::Unknown
    );
    missing
        .teardown(&teardown_spec(&s))
        .await
        .expect("no teardown script: nothing to do");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_profiles_and_file_urls() {
    let repo = TestRepo::new();
    let data = tempfile::tempdir().unwrap();
    let proxy = ProxyServer::start().await;
    let provider = local_provider(data.path(), &proxy.routes);
    let host = proxy.host("pr-7-hooks--webapp");
    let client = proxy.client(&[&host]);
    // The hooks' output lands in the release logs (the sandbox lets them write nowhere else
    // stagebot could read); `mark=` lines are theirs.
    let sha = repo.commit_app(&format!(
        "{APP_CONFIG}\
         seed: echo \"mark=seed $STAGEBOT_RELEASE\"\n\
         postdeploy: echo \"mark=postdeploy $STAGEBOT_RELEASE $PORT\"\n\
         predestroy: echo \"mark=predestroy $STAGEBOT_SLUG\"\n\
         env: {{ GREETING: hello, WORKERS: 2 }}\n\
         preview: {{ env: {{ GREETING: preview-hello }}, profiles: {{ lite: {{ env: {{ LITE: yes }} }} }} }}\n"
    ));
    let mut s1 = spec(&repo, data.path(), "pr-7-hooks", &host, &sha, 1);
    s1.clone_url = format!("file://{}", repo.path().display());
    s1.profile = Some("lite".to_owned());
    s1.vars.insert("WORKERS".to_owned(), "8".to_owned());
    provider.deploy(&s1).await.expect("deploy r1");
    let (_, env) = get(&client, &host, "/env").await.unwrap();
    for line in ["GREETING=preview-hello", "LITE=yes", "WORKERS=8"] {
        assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
    }
    assert!(
        !env.lines().any(|l| l.starts_with("CARGO")),
        "stagebot's own environment leaked:\n{env}"
    );

    let mut s2 = spec(&repo, data.path(), "pr-7-hooks", &host, &sha, 2);
    s2.profile = Some("lite".to_owned());
    provider.deploy(&s2).await.expect("deploy r2 (same commit)");
    let mut unknown = spec(&repo, data.path(), "pr-7-hooks", &host, &sha, 3);
    unknown.profile = Some("huge".to_owned());
    let err = provider.deploy(&unknown).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown profile `huge`: known profiles are lite"
    );
    provider
        .teardown(&teardown_spec(&s2))
        .await
        .expect("teardown");

    let mut marks = String::new();
    for log in [&s1.log_path, &s2.log_path, &teardown_spec(&s2).log_path] {
        for line in std::fs::read_to_string(log).unwrap().lines() {
            if let Some(mark) = line.strip_prefix("mark=") {
                marks.push_str(mark);
                marks.push('\n');
            }
        }
    }
    let lines: Vec<&str> = marks.lines().collect();
    assert_eq!(lines.len(), 4, "{marks}");
    assert_eq!(lines[0], "seed 1");
    assert!(lines[1].starts_with("postdeploy 1 "), "{marks}");
    assert!(lines[2].starts_with("postdeploy 2 "), "{marks}");
    assert_ne!(
        lines[1][13..],
        lines[2][13..],
        "each release gets its own port"
    );
    assert_eq!(lines[3], "predestroy pr-7-hooks");
}

#[tokio::test]
async fn the_clone_token_travels_in_git_config_environment_only() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let record = data.path().join("git-calls");
    // A stand-in for git that records how it was called and fails every fetch.
    let fake_git = data.path().join("fake-git");
    std::fs::write(
        &fake_git,
        format!(
            "#!/bin/sh\nprintf 'ARGS: %s\\n' \"$*\" >> '{r}'\n\
             printf 'ENV: %s %s %s\\n' \"$GIT_CONFIG_COUNT\" \"$GIT_CONFIG_KEY_0\" \"$GIT_CONFIG_VALUE_0\" >> '{r}'\n\
             case \"$*\" in *fetch*) echo 'fatal: simulated network failure' >&2; exit 128;; esac\n",
            r = record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake_git, std::fs::Permissions::from_mode(0o755)).unwrap();
    let routes = stagebot::proxy::Routes::default();
    let mut cfg = stagebot::provider::LocalConfig::new(data.path(), routes);
    cfg.git = fake_git;
    let provider = stagebot::provider::LocalProvider::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let repo = TestRepo::new();
    let sha = stagebot::types::Sha::new(&"d".repeat(40)).unwrap();
    let mut s = spec(&repo, data.path(), "pr-7-token", "h.localhost", &sha, 1);
    s.clone_url = "https://github.com/acme/webapp.git".to_owned();
    s.clone_token = Some(Secret::new("ghs_very_secret"));
    let err = provider.deploy(&s).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Git(m) if m.contains("simulated network failure")),
        "{err:?}"
    );
    assert!(!err.to_string().contains("ghs_very_secret"));

    let calls = std::fs::read_to_string(&record).unwrap();
    let expected_header = {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode("x-access-token:ghs_very_secret");
        format!("ENV: 1 http.extraHeader Authorization: Basic {b}")
    };
    let mut fetches = 0;
    let lines: Vec<&str> = calls.lines().collect();
    for pair in lines.chunks(2) {
        assert!(
            !pair[0].contains("ghs_very_secret"),
            "token in argv: {}",
            pair[0]
        );
        if pair[0].contains(" fetch ") {
            fetches += 1;
            assert!(
                pair[0].contains("-- https://github.com/acme/webapp.git"),
                "{}",
                pair[0]
            );
            assert_eq!(pair[1], expected_header);
        } else {
            assert_eq!(pair[1], "ENV:   ", "token only for fetches: {}", pair[0]);
        }
    }
    assert!(fetches >= 1, "{calls}");
    let log = std::fs::read_to_string(&s.log_path).unwrap();
    assert!(
        !log.contains("ghs_very_secret") && !log.contains("eC1hY2Nlc3MtdG9rZW46"),
        "{log}"
    );
}

#[tokio::test]
async fn kubernetes_example_scripts() {
    use std::os::unix::fs::PermissionsExt;
    let rec = tempfile::tempdir().unwrap();
    let fake = rec.path().join("kubectl");
    std::fs::write(
        &fake,
        r#"#!/usr/bin/env bash
set -euo pipefail
{ printf 'CALL'; printf ' [%s]' "$@"; printf '\n'; } >> "$FAKE_KUBECTL_DIR/calls"
case "$*" in
  *"apply -k "*) cp "${@: -1}/kustomization.yaml" "$FAKE_KUBECTL_DIR/kustomization.yaml" ;;
  *"apply -f -"*) cat >> "$FAKE_KUBECTL_DIR/applied" ;;
  "get namespace "*managed-by*) printf stagebot ;;
  "get namespace "*"stagebot\.dev/url"*) printf 'https://recorded.example' ;;
  *readyReplicas*) printf 1 ;;
  *"-o yaml"*) printf 'kind: Fake\n' ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let provider = Provider::Command(CommandProvider::new(CommandConfig {
        deploy_cmd: dir.join("deploy.sh"),
        teardown_cmd: Some(dir.join("teardown.sh")),
        status_cmd: Some(dir.join("status.sh")),
        timeout: Duration::from_secs(20),
    }));
    let tag = format!("{:016x}", fastrand::u64(..));
    let pwned = format!("/tmp/pwned-k8s-{tag}");
    let mut s = command_spec(rec.path());
    s.branch = format!("x';touch {pwned};'$(touch {pwned})\"");
    s.vars
        .insert("KUBECTL".to_owned(), fake.to_string_lossy().into_owned());
    s.vars.insert(
        "FAKE_KUBECTL_DIR".to_owned(),
        rec.path().to_string_lossy().into_owned(),
    );
    s.vars
        .insert("PREVIEW_DOMAIN".to_owned(), "preview.acme.dev".to_owned());

    let deployed = provider.deploy(&s).await.expect("deploy.sh");
    assert_eq!(deployed.url, "https://pr-7-login--webapp.preview.acme.dev");
    let calls = std::fs::read_to_string(rec.path().join("calls")).unwrap();
    assert!(
        calls.contains(&format!("[--from-literal=STAGEBOT_BRANCH={}]", s.branch)),
        "{calls}"
    );
    assert!(
        calls.contains("[label] [namespace] [pr-7-login--webapp]"),
        "{calls}"
    );
    let k = std::fs::read_to_string(rec.path().join("kustomization.yaml")).unwrap();
    assert!(k.contains("namespace: pr-7-login--webapp"), "{k}");
    assert!(k.contains(&format!("newTag: {}", "c".repeat(40))), "{k}");
    assert!(
        k.contains("value: pr-7-login--webapp.preview.acme.dev"),
        "{k}"
    );
    assert!(
        !std::path::Path::new(&pwned).exists(),
        "a branch name was executed"
    );

    // Teardown and status get no spec variables: wrap them to point them at the stand-in.
    let wrap = |name: &str| {
        let w = rec.path().join(format!("wrap-{name}"));
        std::fs::write(
            &w,
            format!(
                "#!/bin/sh\nexport KUBECTL='{}' FAKE_KUBECTL_DIR='{}'\nexec '{}'\n",
                fake.display(),
                rec.path().display(),
                dir.join(name).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
        w
    };
    let wrapped = Provider::Command(CommandProvider::new(CommandConfig {
        deploy_cmd: wrap("deploy.sh"),
        teardown_cmd: Some(wrap("teardown.sh")),
        status_cmd: Some(wrap("status.sh")),
        timeout: Duration::from_secs(20),
    }));
    assert_eq!(
        wrapped.status(&s.env).await.unwrap(),
        ProviderStatus::Running {
            url: "https://recorded.example".to_owned()
        }
    );
    wrapped
        .teardown(&teardown_spec(&s))
        .await
        .expect("teardown.sh");
    let calls = std::fs::read_to_string(rec.path().join("calls")).unwrap();
    assert!(
        calls.contains("[delete] [namespace] [pr-7-login--webapp] [--ignore-not-found]"),
        "{calls}"
    );
}
