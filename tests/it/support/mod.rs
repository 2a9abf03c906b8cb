//! Helpers for the integration tests: throwaway git repositories, a test app, a proxy server.

#![allow(dead_code)]

pub mod cdp;
pub mod postgres;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stagebot::provider::{DeploySpec, LocalConfig, LocalProvider};
use stagebot::proxy::{self, ProxyClient, ProxyState, Routes};
use stagebot::types::{EnvId, EnvKind, PrNumber, RepoName, Sha, Slug};

/// A tiny HTTP app with no dependencies: `/healthz` → ok, `/env` → its environment,
/// `/headers` → the request headers, POST echoes the body, anything else → `$STAGEBOT_SHA`.
pub const APP_PY: &str = r#"
import http.server, os
sha = os.environ["STAGEBOT_SHA"]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/healthz":
            self.reply(b"ok")
        elif self.path == "/env":
            self.reply("\n".join(f"{k}={v}" for k, v in sorted(os.environ.items())).encode())
        elif self.path.startswith("/headers"):
            self.reply((self.path + "\n" + "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items())).encode())
        else:
            self.reply(sha.encode())
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.reply(self.rfile.read(n))
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// The usual config for the test app.
pub const APP_CONFIG: &str = "start: exec python3 app.py\nhealth: /healthz\n";

/// Run git with args in `dir`, panicking with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=stagebot test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A throwaway repository that commits whole file sets.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
}

impl TestRepo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q"]);
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `files` (path → content; `None` deletes), commit, return the commit.
    pub fn commit(&self, files: &[(&str, Option<&str>)]) -> Sha {
        for (path, content) in files {
            let p = self.path().join(path);
            match content {
                Some(text) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, text).unwrap();
                }
                None => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        git(self.path(), &["add", "-A"]);
        git(
            self.path(),
            &["commit", "-q", "--allow-empty", "-m", "test commit"],
        );
        Sha::new(&git(self.path(), &["rev-parse", "HEAD"])).unwrap()
    }

    /// Commit the test app with `config` as `.github/stagebot.yml`.
    pub fn commit_app(&self, config: &str) -> Sha {
        self.commit(&[
            ("app.py", Some(APP_PY)),
            (".github/stagebot.yml", Some(config)),
        ])
    }
}

/// A running axum server that proxies routed hosts and serves `/__stagebot` itself.
pub struct ProxyServer {
    pub addr: SocketAddr,
    pub routes: Routes,
    pub domain: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProxyServer {
    pub async fn start() -> Self {
        let routes = Routes::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let domain = format!("localhost:{}", addr.port());
        let state = ProxyState {
            routes: routes.clone(),
            client: ProxyClient::new(),
            preview_domain: domain.clone(),
        };
        let app = axum::Router::new()
            .route(
                "/__stagebot",
                axum::routing::get(|| async { "stagebot itself" }),
            )
            .layer(axum::middleware::from_fn_with_state(
                state,
                proxy::middleware,
            ));
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Self {
            addr,
            routes,
            domain,
            task,
        }
    }

    /// `<label>.localhost:<port>`, the host a preview is reached at.
    pub fn host(&self, label: &str) -> String {
        format!("{label}.{}", self.domain)
    }

    /// A client that resolves every `*.localhost` host used in tests to this server.
    pub fn client(&self, hosts: &[&str]) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5));
        for h in hosts {
            let name = h.split(':').next().unwrap();
            b = b.resolve(name, self.addr);
        }
        b.build().unwrap()
    }
}

/// GET `http://host/path` through the proxy: (status, body).
pub async fn get(
    client: &reqwest::Client,
    host: &str,
    path: &str,
) -> Result<(u16, String), reqwest::Error> {
    let resp = client.get(format!("http://{host}{path}")).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// A local provider with test-friendly timings.
pub fn local_provider(data_dir: &Path, routes: &Routes) -> LocalProvider {
    let mut cfg = LocalConfig::new(data_dir, routes.clone());
    cfg.build_timeout = Duration::from_secs(20);
    cfg.health_timeout = Duration::from_secs(10);
    cfg.drain = Duration::from_millis(200);
    cfg.stop_grace = Duration::from_secs(2);
    LocalProvider::new(cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// A deploy spec for a preview of PR 7 of `acme/webapp` from `repo`.
pub fn spec(
    repo: &TestRepo,
    data: &Path,
    slug: &str,
    host: &str,
    sha: &Sha,
    release: u32,
) -> DeploySpec {
    DeploySpec {
        env: EnvId {
            repo: RepoName::new("acme", "webapp").unwrap(),
            slug: Slug::new(slug).unwrap(),
        },
        kind: EnvKind::Preview,
        branch: "feature/login".to_owned(),
        sha: sha.clone(),
        pr: Some(PrNumber(7)),
        release,
        previous_sha: None,
        clone_url: repo.path().to_string_lossy().into_owned(),
        clone_token: None,
        host: host.to_owned(),
        public_url: format!("http://{host}"),
        profile: None,
        first_deploy: release == 1,
        vars: BTreeMap::new(),
        log_path: data.join("logs").join(slug).join(format!("r{release}.log")),
        artifact: format!("{slug}-{release}"),
    }
}

/// Is `pid` a live process (not missing, not a zombie)?
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Live processes (host pids) whose command line contains `token`, with their command lines
/// (arguments joined by spaces). Sandboxed commands report pids of their own PID namespace, so
/// tests find them by a unique token in their arguments instead.
pub fn processes_with(token: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(token) && alive(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// A token unique to this test process and call, for [`processes_with`]: digits, so it can be
/// the fraction of a `sleep` argument (`sleep 60.<token>`).
pub fn unique_token() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "{}{:04}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Wait until `cond` holds, panicking with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read a pid written by a test script, waiting for it to appear.
pub async fn read_pid(path: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no pid in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The process group (the sandbox's leader) recorded for release directory `r<n>` of `slug`.
pub fn pgid_of(data: &Path, slug: &str, release: u32) -> Option<i32> {
    let p: PathBuf = data.join(format!("envs/acme/webapp/{slug}/r{release}.pgid"));
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    i32::try_from(record["pgid"].as_i64()?).ok()
}

/// Kill every process group recorded under `data/envs` (apps a `stagebot serve` leaves running
/// on exit, for the next start to adopt): a test's clean-up.
pub fn kill_recorded_groups(data: &Path) {
    let Ok(owners) = std::fs::read_dir(data.join("envs")) else {
        return;
    };
    for owner in owners.flatten() {
        for repo in std::fs::read_dir(owner.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for env in std::fs::read_dir(repo.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for f in std::fs::read_dir(env.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let p = f.path();
                    if p.extension().is_none_or(|e| e != "pgid") {
                        continue;
                    }
                    let pgid = std::fs::read_to_string(&p)
                        .ok()
                        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                        .and_then(|v| v["pgid"].as_i64())
                        .and_then(|v| i32::try_from(v).ok());
                    if let Some(pgid) = pgid.filter(|p| *p > 1) {
                        // SAFETY: killpg(2) with a recorded group id > 1; no memory involved.
                        unsafe { libc::killpg(pgid, libc::SIGKILL) };
                    }
                }
            }
        }
    }
}
