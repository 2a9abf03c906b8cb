//! Hostile pull requests against the local provider's sandbox (real bwrap, real processes), the
//! refusal to run without it, and the command provider's scoped token.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stagebot::environment::EnvRecord;
use stagebot::fake_github::FakeGitHub;
use stagebot::provider::sandbox::INSTALL_HINT;
use stagebot::testkit::{GitRepo, INSTALLATION, SECRET, Stack, StackOptions, TestPr};
use stagebot::types::{PrNumber, RepoName};

use crate::support::{alive, pgid_of};

const BIN: &str = env!("CARGO_BIN_EXE_stagebot");

/// The attacker's app: runs every probe in `build` and again in `start`, and serves both reports
/// as JSON on `$PORT`. A probe reports `ok: true` when the attempt succeeded.
const PROBE_PY: &str = r#"
import http.server, json, os, signal, socket, sys

t = json.load(open("targets.json"))
secrets = [s.encode() for s in t["secrets"]]

def attempt(fn):
    try:
        return {"ok": True, "detail": str(fn())[:300]}
    except BaseException as e:
        return {"ok": False, "detail": (type(e).__name__ + ": " + str(e))[:300]}

def read(p):
    with open(p, "rb") as f:
        return f.read(200)

def write(p):
    with open(p, "w") as f:
        f.write("pwned")
    return "written " + p

def connect(p):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(p)
    s.sendall(b"GET /admin/environments HTTP/1.0\r\nHost: x\r\n\r\n")
    return s.recv(200)

def secret_in(p):
    with open(p, "rb") as f:
        data = f.read()
    found = [s for s in secrets if s in data]
    if found:
        return "secret found in " + p
    raise LookupError("no secret in " + p)

def scan():
    pids = sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
    if t["stagebot_pid"] in pids or t["victim_pid"] in pids:
        return "outside process visible: %s" % pids
    for pid in pids:
        try:
            return secret_in("/proc/%d/environ" % pid)
        except (LookupError, OSError):
            pass
    raise LookupError("%d processes, none outside, no secret" % len(pids))

def caps():
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:") and int(line.split()[1], 16) != 0:
            return line.strip()
    raise PermissionError("no effective capability")

def data_dir_walk():
    # bwrap makes empty directories on the way to the checkout and HOME it mounts; anything
    # else seen under the data dir is a leak.
    own = [os.getcwd(), os.environ["HOME"]]
    def mine(p):
        return any(o == p or o.startswith(p + "/") or p.startswith(o + "/") for o in own)
    seen = []
    for root, dirs, files in os.walk(t["data_dir"]):
        for name in dirs + files:
            p = os.path.join(root, name)
            if not mine(p):
                seen.append(p)
        # Descend only into the directories on the way (not into its own, not into leaks).
        dirs[:] = [d for d in dirs if mine(os.path.join(root, d)) and os.path.join(root, d) not in own]
    if seen:
        return seen
    raise LookupError("only the way to its own checkout and HOME")

def kill_other():
    os.kill(t["victim_pid"], signal.SIGKILL)
    return "killed"

def probes(phase):
    here = os.getcwd()
    hostile = {
        "key_file": lambda: read(t["key_file"]),
        "key_dir": lambda: os.listdir(os.path.dirname(t["key_file"])),
        "stagebot_environ": lambda: read("/proc/%d/environ" % t["stagebot_pid"]),
        "pid1_environ": lambda: secret_in("/proc/1/environ"),
        "own_environ": lambda: secret_in("/proc/self/environ"),
        "proc_scan": scan,
        "admin_socket": lambda: connect(t["admin_socket"]),
        "other_checkout_read": lambda: read(os.path.join(t["victim_dir"], "app.py")),
        "other_checkout_list": lambda: os.listdir(t["victim_dir"]),
        "other_checkout_write": lambda: write(os.path.join(t["victim_dir"], "pwned-" + phase)),
        "data_dir": data_dir_walk,
        "store": lambda: os.listdir(os.path.join(t["data_dir"], "db")),
        "git_cache": lambda: os.listdir(os.path.join(t["data_dir"], "repos")),
        "logs": lambda: os.listdir(os.path.join(t["data_dir"], "logs")),
        "signal_other": kill_other,
        "write_usr": lambda: write("/usr/stagebot-pwned-" + phase),
        "write_etc": lambda: write("/etc/stagebot-pwned-" + phase),
        "capabilities": caps,
    }
    control = {
        "own_file": lambda: read("probe.py"),
        "own_write": lambda: write(os.path.join(here, "control-" + phase)),
        "home_write": lambda: write(os.path.join(os.environ["HOME"], "control-" + phase)),
        "tmp_write": lambda: write("/tmp/control-" + phase),
        "own_signal": lambda: os.kill(os.getpid(), 0) or "signalled",
        "own_proc": lambda: read("/proc/%d/status" % os.getpid()),
        "own_listing": lambda: os.listdir(here),
        # Best effort outside writes, judged by the test on the host's side.
        "escape_env_dir": lambda: write(os.path.join(os.path.dirname(here), "pwned-" + phase)),
        "escape_tmp": lambda: write(t["host_tmp_marker"]),
    }
    return {
        "hostile": {k: attempt(f) for k, f in hostile.items()},
        "control": {k: attempt(f) for k, f in control.items()},
    }

if sys.argv[1] == "build":
    json.dump(probes("build"), open("build-report.json", "w"))
    sys.exit(0)

report = json.dumps({"build": json.load(open("build-report.json")), "start": probes("start")}).encode()

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path == "/healthz" else report
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const VICTIM_PY: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"victim alive"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const VICTIM_CONFIG: &str = "start: exec python3 app.py\nhealth: /healthz\n";

fn env_of(stack: &Stack, pr: u64) -> EnvRecord {
    stack
        .app
        .store()
        .envs()
        .unwrap()
        .into_iter()
        .find(|e| e.pr == Some(PrNumber(pr)))
        .unwrap_or_else(|| panic!("no environment for PR #{pr}"))
}

fn assert_bwrap_installed() {
    let found = Command::new("bwrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "these tests need bubblewrap: apt-get install bubblewrap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pull_requests_reach_nothing_outside_their_checkout() {
    assert_bwrap_installed();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_file = dir.path().join("keys").join("app.pem");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    let mut opts = StackOptions::new(&data);
    opts.key_file = Some(key_file.clone());
    let stack = Stack::start(opts).await.unwrap();

    // The victim: an ordinary preview, live.
    let victim_files = [
        ("app.py", VICTIM_PY.to_owned()),
        (".github/stagebot.yml", VICTIM_CONFIG.to_owned()),
    ];
    let (git, main_sha) = GitRepo::init(&dir.path().join("src"), &victim_files).unwrap();
    stack.mirror(&main_sha, &victim_files);
    stack.mirror_ref("main", &victim_files);
    let victim_sha = git.commit("victim", &victim_files, "victim").unwrap();
    stack.mirror(&victim_sha, &victim_files);
    let victim_pr = TestPr::new(1, "victim", victim_sha, &git.clone_url());
    stack.open_pr(&victim_pr).await.unwrap();
    stack.settle().await.unwrap();
    let victim = env_of(&stack, 1);
    assert_eq!(
        stack.get(&victim.url).await.unwrap(),
        (200, "victim alive".to_owned())
    );
    let victim_release = victim.current_release().unwrap();
    let victim_pid = pgid_of(&data, victim.id.slug.as_str(), victim_release).unwrap();
    assert!(alive(victim_pid));
    let victim_dir = data.join(format!(
        "envs/acme/webapp/{}/r{victim_release}",
        victim.id.slug
    ));
    assert!(victim_dir.join("app.py").exists());

    // The attacker knows every path and pid it could want.
    let host_tmp_marker = std::env::temp_dir().join(format!(
        "stagebot-escape-{}",
        crate::support::unique_token()
    ));
    let targets = json!({
        "key_file": key_file,
        "stagebot_pid": std::process::id(),
        "victim_pid": victim_pid,
        "victim_dir": victim_dir,
        "data_dir": data,
        "admin_socket": stagebot::serve::admin_socket(&data),
        "host_tmp_marker": host_tmp_marker,
        "secrets": [SECRET, "PRIVATE KEY", "WEBHOOK_SECRET"],
    });
    let attacker_files = [
        ("probe.py", PROBE_PY.to_owned()),
        ("targets.json", targets.to_string()),
        (
            ".github/stagebot.yml",
            "build: python3 probe.py build\nstart: exec python3 probe.py start\nhealth: /healthz\n"
                .to_owned(),
        ),
    ];
    let attacker_sha = git.commit("attacker", &attacker_files, "attack").unwrap();
    stack.mirror(&attacker_sha, &attacker_files);
    let attacker_pr = TestPr::new(2, "attacker", attacker_sha, &git.clone_url());
    stack.open_pr(&attacker_pr).await.unwrap();
    stack.settle().await.unwrap();
    let attacker = env_of(&stack, 2);
    assert!(
        attacker.current_release().is_some(),
        "the attacker's app did not deploy: {:?} {:?}",
        attacker.last_error,
        attacker.last_log_tail
    );
    let (status, body) = stack
        .get(&format!("{}/report", attacker.url))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();

    let mut failures = Vec::new();
    for phase in ["build", "start"] {
        let hostile = report[phase]["hostile"].as_object().unwrap();
        assert_eq!(hostile.len(), 18, "{phase}: {hostile:?}");
        for (name, outcome) in hostile {
            if outcome["ok"] != json!(false) {
                failures.push(format!("{phase} {name}: succeeded: {}", outcome["detail"]));
            }
        }
        // The control: the same kinds of access work on the app's own things.
        for (name, outcome) in report[phase]["control"].as_object().unwrap() {
            if name.starts_with("escape_") {
                continue;
            }
            if outcome["ok"] != json!(true) {
                failures.push(format!(
                    "{phase} control {name} failed: {}",
                    outcome["detail"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What the probes could not be trusted to say, seen from the host.
    for phase in ["build", "start"] {
        assert!(!victim_dir.join(format!("pwned-{phase}")).exists());
        assert!(!Path::new(&format!("/usr/stagebot-pwned-{phase}")).exists());
        assert!(!Path::new(&format!("/etc/stagebot-pwned-{phase}")).exists());
        let env_dir = data.join(format!("envs/acme/webapp/{}", attacker.id.slug));
        assert!(!env_dir.join(format!("pwned-{phase}")).exists());
    }
    assert!(
        !host_tmp_marker.exists(),
        "the sandbox's /tmp is the host's"
    );
    // The control writes landed where they should: the checkout and the environment's HOME.
    let attacker_dir = data.join(format!(
        "envs/acme/webapp/{}/r{}",
        attacker.id.slug,
        attacker.current_release().unwrap()
    ));
    assert!(attacker_dir.join("control-build").exists());
    assert!(attacker_dir.join("control-start").exists());
    assert!(
        attacker_dir
            .parent()
            .unwrap()
            .join("home/control-start")
            .exists()
    );
    // And the victim never noticed.
    assert!(alive(victim_pid));
    assert_eq!(
        stack.get(&victim.url).await.unwrap(),
        (200, "victim alive".to_owned())
    );
    let _ = stack.stop().await;
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve_command(fake: &FakeGitHub, data_dir: &Path, addr: SocketAddr, path: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", path)
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("WEBHOOK_SECRET", SECRET)
        .env("APP_ID", fake.app_id().to_string())
        .env("PRIVATE_KEY", fake.private_key_pem().expose())
        .env("GITHUB_API_URL", fake.url())
        .env("STAGEBOT_DATA_DIR", data_dir)
        .env("STAGEBOT_LISTEN", addr.to_string())
        .stdin(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bwrap_serve_refuses_unless_the_sandbox_is_turned_off() {
    let fake = FakeGitHub::start().await;
    fake.add_installation(INSTALLATION, "acme");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    // A PATH without bwrap.
    let empty_bin = dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty_bin).unwrap();
    let no_bwrap = empty_bin.to_string_lossy().into_owned();

    let out = serve_command(&fake, &data, addr, &no_bwrap)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, format!("error: {INSTALL_HINT}\n"));
    assert!(stderr.contains("apt-get install bubblewrap"));

    // STAGEBOT_SANDBOX=off: it runs, and says so.
    let log = dir.path().join("serve.log");
    let mut child = serve_command(&fake, &data, addr, &no_bwrap)
        .env("STAGEBOT_SANDBOX", "off")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let readyz = loop {
        if let Ok(resp) = client.get(format!("http://{addr}/readyz")).send().await {
            break (resp.status().as_u16(), resp.text().await.unwrap());
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "serve exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Its admin socket is its user's alone.
    use std::os::unix::fs::PermissionsExt as _;
    let sock = std::fs::metadata(stagebot::serve::admin_socket(&data)).unwrap();
    assert_eq!(sock.permissions().mode() & 0o777, 0o600);
    // Its secrets are gone from its environment, even from the block /proc shows.
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("STAGEBOT_SANDBOX=off"), "{environ}");
    assert!(!environ.contains(SECRET), "{environ}");
    assert!(!environ.contains("PRIVATE KEY"), "{environ}");
    let dashboard = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(readyz.0, 200, "sandbox off is a warning, not unready");
    let v: Value = serde_json::from_str(&readyz.1).unwrap();
    assert_eq!(v["ready"], json!(true), "{v}");
    assert_eq!(v["checks"]["sandbox"]["ok"], json!(false), "{v}");
    let detail = v["checks"]["sandbox"]["detail"].as_str().unwrap();
    assert!(detail.contains("STAGEBOT_SANDBOX=off"), "{detail}");
    assert_eq!(v["checks"]["limits"]["ok"], json!(false), "{v}");
    assert!(
        v["checks"]["limits"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("not enforced"),
        "{v}"
    );
    assert!(
        dashboard.contains("class=warning") && dashboard.contains("STAGEBOT_SANDBOX=off"),
        "{dashboard}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("sandbox off"), "{log}");
    assert!(log.contains("not enforced"), "{log}");
    // The data dir is stagebot's alone.
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_provider_gets_a_token_for_one_repository_read_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let deploy = dir.path().join("deploy.sh");
    std::fs::write(
        &deploy,
        format!(
            "#!/bin/sh\nset -eu\nprintf '%s' \"$STAGEBOT_CLONE_TOKEN\" > '{}'\necho \"url=https://$STAGEBOT_SLUG.example.dev\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&deploy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut opts = StackOptions::new(&dir.path().join("data"));
    opts.command_provider = Some(stagebot::provider::command::CommandConfig {
        deploy_cmd: deploy,
        teardown_cmd: None,
        status_cmd: None,
        timeout: Duration::from_secs(20),
    });
    let stack = Stack::start(opts).await.unwrap();
    let other: RepoName = "acme/secrets".parse().unwrap();
    stack.fake.add_repo(&other, "main", INSTALLATION);
    stack
        .fake
        .set_file(&other, "main", "README", "other repository");
    let files = [(".github/stagebot.yml", "start: ./run\n".to_owned())];
    stack.mirror_ref("main", &files);
    stack.mirror_ref("feature", &files);
    let sha = stagebot::types::Sha::new(&"a".repeat(40)).unwrap();
    stack.mirror(&sha, &files);
    let pr = TestPr::new(5, "feature", sha, "https://github.com/acme/webapp.git");
    stack.open_pr(&pr).await.unwrap();
    stack.settle().await.unwrap();

    // What stagebot asked GitHub for.
    let minted: Vec<Value> = stack
        .fake
        .requests_to("POST", "/app/installations/1/access_tokens")
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b.get("repositories").is_some())
        .collect();
    assert_eq!(
        minted,
        vec![json!({ "repositories": ["webapp"], "permissions": { "contents": "read" } })]
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.starts_with("ghs_"), "{token}");

    // What the token can do, against the fake that honours the scope, with an ordinary
    // installation token as the control.
    let full = stack
        .app
        .github()
        .installation_token(INSTALLATION)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let call = async |method: reqwest::Method, path: &str, token: &str| {
        let mut req = http
            .request(method.clone(), format!("{}{path}", stack.fake.url()))
            .header("Authorization", format!("token {token}"))
            .header("User-Agent", "stagebot-test");
        if method == reqwest::Method::POST {
            req = req.json(&json!({ "body": "hello" }));
        }
        req.send().await.unwrap().status().as_u16()
    };
    let read_own = "/repos/acme/webapp/contents/.github/stagebot.yml?ref=feature";
    let read_other = "/repos/acme/secrets/contents/README?ref=main";
    let write_own = "/repos/acme/webapp/issues/5/comments";
    assert_eq!(call(reqwest::Method::GET, read_own, &token).await, 200);
    assert_eq!(call(reqwest::Method::GET, read_other, &token).await, 404);
    assert_eq!(call(reqwest::Method::POST, write_own, &token).await, 403);
    assert_eq!(
        call(reqwest::Method::GET, read_other, full.expose()).await,
        200
    );
    assert_eq!(
        call(reqwest::Method::POST, write_own, full.expose()).await,
        201
    );
    // The control's comment (posted as the app) is the only one: the scoped token's was not.
    stack.expect_reply(5, |t| t == "hello");
    let _ = stack.stop().await;
}
