//! The front door: memory before authentication is bounded (a shared budget of unverified body
//! bytes, a connection limit), `/logs` streams a bounded tail of a log of any size, stagebot's
//! own pages answer only on its own host, private repositories are hidden from anonymous
//! visitors, and old deliveries and dead letters are pruned. The memory figures are read from the
//! real binary's `/proc/<pid>/status`.

use std::io::{Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use stagebot::clock::Clock;
use stagebot::environment::EnvRecord;
use stagebot::event::payloads::{self, PrPayload};
use stagebot::fake_github::{FakeGitHub, FakePr};
use stagebot::store::{DeliveryStatus, Store};
use stagebot::testkit::{INSTALLATION, SECRET, Stack, StackOptions};
use stagebot::types::{DeliveryId, EnvId, EnvKind, RepoName, Sha, Slug};
use stagebot::webhook::sign;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_stagebot");
/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(60);
const MIB: usize = 1024 * 1024;

async fn poll<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// A `stagebot serve` child process against a fake GitHub, killed when dropped.
struct Bin {
    child: Child,
    addr: SocketAddr,
    _fake: FakeGitHub,
}

impl Bin {
    async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Bin {
        let fake = FakeGitHub::start().await;
        let addr = free_addr();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("WEBHOOK_SECRET", SECRET)
            .env("APP_ID", fake.app_id().to_string())
            .env("PRIVATE_KEY", fake.private_key_pem().expose())
            .env("GITHUB_API_URL", fake.url())
            .env("STAGEBOT_DATA_DIR", data_dir)
            .env("STAGEBOT_LISTEN", addr.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut bin = Bin {
            child,
            addr,
            _fake: fake,
        };
        let child = &mut bin.child;
        poll("the server to answer /healthz", async || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("stagebot serve exited early: {status}");
            }
            let (status, _, _) = get(addr, &addr.to_string(), "/healthz").await.ok()?;
            (status == 200).then_some(())
        })
        .await;
        bin
    }

    /// `VmHWM` (peak resident memory) in KiB.
    fn peak_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM:")
    }

    /// `VmRSS` in KiB.
    fn rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmRSS:")
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// Split an HTTP/1.1 answer: status, lowercase headers, body.
fn parse(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head, raw[end + 4..].to_vec())
}

/// Send `request` (the whole request, `Connection: close`) and read the answer to the end.
async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(request).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))??;
    Ok(parse(&raw))
}

/// `GET path` with this `Host` header. The body is de-chunked when it came chunked.
async fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, head, body) = exchange(addr, req.as_bytes()).await?;
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body
    };
    Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

/// A signed delivery sent with this `Host` header.
async fn signed_post(
    addr: SocketAddr,
    host: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> (u16, String) {
    let mut req = format!(
        "POST /webhook HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\n\
         X-Hub-Signature-256: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        sign(SECRET, body)
    )
    .into_bytes();
    req.extend_from_slice(body);
    let (status, _, body) = exchange(addr, &req).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One unsigned upload of `body` (a wrong signature, so the server reads it all before it can
/// say no): the body is written while the answer is read, as an attacker's client would.
/// Returns the status and whether `Retry-After` came with it.
async fn unsigned_upload(addr: SocketAddr, i: usize, body: Arc<Vec<u8>>) -> (u16, bool) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: burst-{i}\r\n\
         X-Hub-Signature-256: sha256={}\r\nConnection: close\r\n\r\n",
        body.len(),
        "00".repeat(32)
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        // Refused requests are closed before their body is read: that write fails, fine.
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let answer = tokio::time::timeout(WAIT, async {
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => panic!("upload {i}: connection failed before an answer: {e}"),
            }
        }
    })
    .await;
    assert!(answer.is_ok(), "upload {i}: no answer in time");
    writer.abort();
    let (status, head, _) = parse(&raw);
    (status, head.contains("\r\nretry-after: "))
}

// ---------------------------------------------------------------------------------------------
// Memory before authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_uploads_beyond_the_budget_get_503_and_memory_stays_bounded() {
    let dir = TempDir::new().unwrap();
    let bin = Bin::start(&dir.path().join("data"), &[]).await;
    let before = bin.peak_kib();
    let body = Arc::new(vec![b' '; 24 * MIB]);
    let uploads: Vec<_> = (0..64)
        .map(|i| tokio::spawn(unsigned_upload(bin.addr, i, Arc::clone(&body))))
        .collect();
    let mut answers = Vec::new();
    for u in uploads {
        answers.push(u.await.unwrap());
    }
    let peak = bin.peak_kib();
    let refused = answers.iter().filter(|(s, _)| *s == 503).count();
    let read = answers.iter().filter(|(s, _)| *s == 401).count();
    eprintln!(
        "64 unsigned 24 MiB uploads: VmHWM {} MiB before, {} MiB after; {read} read and \
         answered 401, {refused} answered 503",
        before / 1024,
        peak / 1024
    );
    assert_eq!(read + refused, 64, "{answers:?}");
    assert!(read >= 1, "none was read at all: {answers:?}");
    assert!(refused >= 1, "none was refused: {answers:?}");
    assert!(
        answers.iter().all(|(s, retry)| *s != 503 || *retry),
        "a 503 without Retry-After: {answers:?}"
    );
    assert!(
        peak < 150 * 1024,
        "peak RSS {} MiB after the burst (was {} MiB)",
        peak / 1024,
        before / 1024
    );

    // The budget came back: a signed delivery of 20 MiB (more than a third of it) is taken.
    let pad = "x".repeat(20 * MIB);
    let payload = serde_json::to_vec(&json!({ "zen": "after the burst", "pad": pad })).unwrap();
    let (status, answer) = signed_post(
        bin.addr,
        &bin.addr.to_string(),
        "push",
        "after-burst",
        &payload,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_answered_503_until_one_closes() {
    let dir = TempDir::new().unwrap();
    let bin = Bin::start(
        &dir.path().join("data"),
        &[("STAGEBOT_MAX_CONNECTIONS", "2")],
    )
    .await;
    // Two connections take both slots (open, nothing sent yet).
    let mut first = TcpStream::connect(bin.addr).await.unwrap();
    let second = TcpStream::connect(bin.addr).await.unwrap();
    // The server has accepted them once a third is turned away.
    let host = bin.addr.to_string();
    let (status, head, body) = poll("a connection over the limit to be refused", async || {
        let answer = get(bin.addr, &host, "/healthz").await.ok()?;
        (answer.0 == 503).then_some(answer)
    })
    .await;
    assert_eq!(status, 503);
    assert!(head.contains("\r\nretry-after: 1"), "{head}");
    assert!(body.contains("too many open connections"), "{body}");
    // A held connection still works.
    first
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    first.read_to_end(&mut raw).await.unwrap();
    assert_eq!(parse(&raw).0, 200);
    // Its slot is free again once it closed.
    drop(first);
    poll("a slot to free up", async || {
        let (status, _, _) = get(bin.addr, &host, "/healthz").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    drop(second);
}

// ---------------------------------------------------------------------------------------------
// Logs, private repositories (real binary)

fn env_record(repo: &str, slug: &str, private: bool) -> EnvRecord {
    let repo: RepoName = repo.parse().unwrap();
    let id = EnvId {
        repo,
        slug: Slug::new(slug).unwrap(),
    };
    let mut env = EnvRecord::new(id, EnvKind::Preview, "feature", Utc::now());
    env.private = private;
    env.deployed(&Sha::new(&"a".repeat(40)).unwrap(), 1)
        .unwrap()
}

fn log_path(data: &Path, env: &EnvRecord, release: u32) -> PathBuf {
    data.join("logs")
        .join(env.id.repo.owner())
        .join(env.id.repo.name())
        .join(env.id.slug.as_str())
        .join(format!("{release}.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_1_gib_file_stream_the_tail_in_flat_memory_and_private_repositories_are_hidden() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let public = env_record("acme/webapp", "pr-1", false);
    let private = env_record("acme/secret-sauce", "pr-2", true);
    {
        let store = Store::open(&data).unwrap();
        store.put_env(&public).unwrap();
        store.put_env(&private).unwrap();
    }
    // A 1 GiB log made in no time: a sparse file with real lines at its end.
    let big = log_path(&data, &public, 1);
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 30).unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    for i in 0..1000 {
        writeln!(f, "the end is near {i}").unwrap();
    }
    drop(f);
    let secret_log = log_path(&data, &private, 1);
    std::fs::create_dir_all(secret_log.parent().unwrap()).unwrap();
    std::fs::write(&secret_log, "DATABASE_PASSWORD=hunter2\n").unwrap();

    let bin = Bin::start(&data, &[]).await;
    let host = bin.addr.to_string();
    let before = bin.peak_kib();
    let rss_before = bin.rss_kib();
    // Five readers at once.
    let readers: Vec<_> = (0..5)
        .map(|_| {
            let host = host.clone();
            let addr = bin.addr;
            tokio::spawn(async move { get(addr, &host, "/logs/acme/webapp/pr-1/1").await })
        })
        .collect();
    for r in readers {
        let (status, head, body) = r.await.unwrap().unwrap();
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("text/plain"), "{head}");
        assert!(
            body.starts_with("[stagebot: the end of the log, at most its last 1024 KiB; earlier output is not shown]\n"),
            "{}",
            &body[..body.len().min(200)]
        );
        assert!(
            body.ends_with("the end is near 999\n"),
            "{}",
            &body[body.len() - 100..]
        );
        assert!(body.len() <= MIB + 200, "{} bytes", body.len());
    }
    let after = bin.peak_kib();
    eprintln!(
        "/logs of a 1 GiB log, 5 readers: VmHWM {} KiB before, {} KiB after (RSS before {} KiB)",
        before, after, rss_before
    );
    assert!(
        after < before + 32 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );

    // Anonymous visitors see nothing of the private repository.
    let (status, _, api) = get(bin.addr, &host, "/api/environments").await.unwrap();
    assert_eq!(status, 200);
    let envs: Value = serde_json::from_str(&api).unwrap();
    let repos: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["repo"].as_str())
        .collect();
    assert_eq!(repos, ["acme/webapp"], "{api}");
    let (status, _, page) = get(bin.addr, &host, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("acme/webapp"), "{page}");
    assert!(!page.contains("secret-sauce"), "{page}");
    assert!(page.contains("private repositories are hidden"), "{page}");
    for path in [
        "/logs/acme/secret-sauce/pr-2/1",
        "/api/environments/acme/secret-sauce/pr-2",
    ] {
        let (status, _, body) = get(bin.addr, &host, path).await.unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("hunter2"), "{body}");
    }
    drop(bin);

    // With STAGEBOT_DASHBOARD_PUBLIC=true they are shown.
    let bin = Bin::start(&data, &[("STAGEBOT_DASHBOARD_PUBLIC", "true")]).await;
    let host = bin.addr.to_string();
    let (_, _, api) = get(bin.addr, &host, "/api/environments").await.unwrap();
    assert!(api.contains("acme/secret-sauce"), "{api}");
    let (_, _, page) = get(bin.addr, &host, "/").await.unwrap();
    assert!(page.contains("acme/secret-sauce"), "{page}");
    assert!(!page.contains("private repositories are hidden"), "{page}");
    let (status, _, body) = get(bin.addr, &host, "/logs/acme/secret-sauce/pr-2/1")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "DATABASE_PASSWORD=hunter2\n");
}

// ---------------------------------------------------------------------------------------------
// The host rule, private repositories from payloads, retention (in-process stack)

async fn stack(clock: Option<chrono::DateTime<Utc>>) -> (Stack, TempDir) {
    let dir = TempDir::new().unwrap();
    let mut opts = StackOptions::new(&dir.path().join("data"));
    opts.manual_clock = clock;
    (Stack::start(opts).await.unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stagebots_pages_answer_on_its_own_host_only_and_the_webhook_and_probes_on_any() {
    let (stack, _dir) = stack(None).await;
    let env = env_record("acme/webapp", "pr-1", false);
    stack.app.store().put_env(&env).unwrap();
    let (log, _) = stack.app.log_location(&env.id, 1);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "built\n").unwrap();
    let port = stack.addr.port();
    let own = stack.addr.to_string();
    let foreign = [
        format!("x.localhost:{port}"),
        format!("pr-9-nothing--webapp.localhost:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "evil.example".to_owned(),
    ];
    let pages = [
        "/",
        "/api/environments",
        "/api/environments/acme/webapp/pr-1",
        "/metrics",
        "/logs/acme/webapp/pr-1/1",
    ];
    for path in pages {
        for own in [
            own.clone(),
            format!("localhost:{port}"),
            format!("LOCALHOST:{port}"),
        ] {
            let (status, _, body) = get(stack.addr, &own, path).await.unwrap();
            assert_eq!(status, 200, "{path} on {own}: {body}");
        }
        for host in &foreign {
            let (status, _, body) = get(stack.addr, host, path).await.unwrap();
            assert_eq!(status, 404, "{path} on {host}: {body}");
            assert!(body.contains("no live environment"), "{body}");
            assert!(
                !body.contains("acme/webapp") && !body.contains("built"),
                "{body}"
            );
        }
    }
    for host in foreign.iter().chain([&own]) {
        for path in ["/healthz", "/readyz"] {
            let (status, _, body) = get(stack.addr, host, path).await.unwrap();
            assert_eq!(status, 200, "{path} on {host}: {body}");
        }
        let delivery = format!("ping-{}", host.replace([':', '.'], "-"));
        let (status, body) =
            signed_post(stack.addr, host, "ping", &delivery, br#"{"zen":"hi"}"#).await;
        assert_eq!(status, 200, "/webhook on {host}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repositorys_environment_is_recorded_private_and_hidden() {
    let (stack, _dir) = stack(None).await;
    for (number, private) in [(31, true), (32, false)] {
        let mut p = PrPayload::new("opened", &stack.repo, number);
        p.head_ref = format!("feature-{number}");
        p.private = private;
        // Nothing to fetch: the deploy fails, the environment is recorded all the same.
        p.clone_url = Some("/nonexistent/stagebot-test-repo".into());
        p.head_clone_url = p.clone_url.clone();
        p.installation_id = Some(INSTALLATION);
        stack.fake.upsert_pr(
            &stack.repo,
            FakePr::new(number, &p.head_ref, Sha::new(&p.head_sha).unwrap()),
        );
        let (status, body) = stack
            .send("pull_request", &payloads::pull_request(&p))
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
    }
    stack.settle().await.unwrap();
    let envs = stack.app.store().envs().unwrap();
    let private: Vec<_> = envs.iter().filter(|e| e.private).collect();
    let public: Vec<_> = envs.iter().filter(|e| !e.private).collect();
    assert_eq!((private.len(), public.len()), (1, 1), "{envs:#?}");
    assert_eq!(private[0].pr.map(|n| n.0), Some(31));
    let own = stack.addr.to_string();
    let (_, _, api) = get(stack.addr, &own, "/api/environments").await.unwrap();
    let listed: Value = serde_json::from_str(&api).unwrap();
    let prs: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["pr"].as_u64())
        .collect();
    assert_eq!(prs, [32], "{api}");
    let hidden = &private[0].id;
    let (status, _, _) = get(
        stack.addr,
        &own,
        &format!("/api/environments/{}/{}", hidden.repo, hidden.slug),
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_and_dead_letters_are_pruned_after_the_retention() {
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let (stack, _dir) = stack(Some(start)).await;
    let clock = stack.clock.clone().unwrap();
    let store = stack.app.store().clone();
    // One finished the ordinary way (an event stagebot ignores)…
    let (status, body) = stack
        .send_as("zzz_unknown_event", "ignored-1", &json!({ "zen": "x" }))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    stack.settle().await.unwrap();
    // …and one dead letter.
    let dead = DeliveryId::new("dead-1").unwrap();
    store
        .insert_delivery(&dead, "push", b"{}", clock.now())
        .await
        .unwrap();
    store
        .fail_delivery(&dead, "GitHub: 500", None, clock.now())
        .unwrap();
    let ignored = DeliveryId::new("ignored-1").unwrap();
    let status_of = |id: &DeliveryId| store.delivery(id).unwrap().map(|r| r.status);
    assert!(matches!(
        status_of(&ignored),
        Some(DeliveryStatus::Ignored { .. })
    ));
    assert_eq!(status_of(&dead), Some(DeliveryStatus::Dead));

    // Within the retention (7 days by default): kept, and a redelivery is still a duplicate.
    clock.advance(chrono::Duration::days(6));
    assert_eq!(stagebot::serve::prune(&stack.app).unwrap(), (0, 0));
    let (status, body) = stack
        .send_as("zzz_unknown_event", "ignored-1", &json!({ "zen": "x" }))
        .await
        .unwrap();
    assert_eq!((status, body["duplicate"].as_bool()), (200, Some(true)));

    // After it: both gone, payloads too.
    clock.advance(chrono::Duration::days(2));
    assert_eq!(stagebot::serve::prune(&stack.app).unwrap(), (1, 1));
    assert_eq!(status_of(&ignored), None);
    assert_eq!(status_of(&dead), None);
    assert_eq!(store.payload(&dead).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_beyond_the_maximum_go_oldest_first() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let ids: Vec<DeliveryId> = (0..6)
        .map(|i| DeliveryId::new(&format!("dead-{i}")).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let at = t0 + chrono::Duration::minutes(i as i64);
        store.insert_delivery(id, "push", b"{}", at).await.unwrap();
        store.fail_delivery(id, "boom", None, at).unwrap();
    }
    // A retrying delivery and a processed one are no dead letters: untouched by the maximum.
    let retrying = DeliveryId::new("retrying").unwrap();
    store
        .insert_delivery(&retrying, "push", b"{}", t0)
        .await
        .unwrap();
    store
        .fail_delivery(&retrying, "boom", Some(t0 + chrono::Duration::hours(1)), t0)
        .unwrap();
    let done = DeliveryId::new("done").unwrap();
    store
        .insert_delivery(&done, "push", b"{}", t0)
        .await
        .unwrap();
    store
        .finish_delivery(&done, DeliveryStatus::Processed, t0)
        .unwrap();

    assert_eq!(
        store
            .prune_dead_letters(t0 - chrono::Duration::days(7), 4)
            .unwrap(),
        2
    );
    let left: Vec<String> = store
        .deliveries()
        .unwrap()
        .into_iter()
        .map(|r| r.id.as_str().to_owned())
        .collect();
    for gone in ["dead-0", "dead-1"] {
        assert!(!left.iter().any(|l| l == gone), "{gone} kept: {left:?}");
    }
    for kept in ["dead-2", "dead-5", "retrying", "done"] {
        assert!(left.iter().any(|l| l == kept), "{kept} pruned: {left:?}");
    }
    // Past the retention every dead letter goes, however few.
    assert_eq!(
        store
            .prune_dead_letters(t0 + chrono::Duration::days(1), 100)
            .unwrap(),
        4
    );
    assert_eq!(store.pending().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Release logs through a real deploy; settings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_deploy_rotates_its_log_at_the_cap_and_logs_shows_the_tail() {
    use std::os::unix::fs::PermissionsExt;
    let scripts = TempDir::new().unwrap();
    let deploy = scripts.path().join("deploy.sh");
    // 3 MB of output, twelve times the cap, then the URL.
    std::fs::write(
        &deploy,
        "#!/bin/sh\nyes 'chatty deploy line ..........................................' | head -c 3000000 >&2\n\
         echo 'last words' >&2\necho url=https://chatty.example.dev\n",
    )
    .unwrap();
    std::fs::set_permissions(&deploy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = TempDir::new().unwrap();
    let cap: u64 = 256 * 1024;
    let mut opts = StackOptions::new(&dir.path().join("data"));
    opts.log_max = Some(cap);
    opts.command_provider = Some(stagebot::provider::command::CommandConfig {
        deploy_cmd: deploy,
        teardown_cmd: None,
        status_cmd: None,
        timeout: Duration::from_secs(30),
    });
    let stack = Stack::start(opts).await.unwrap();
    let mut p = PrPayload::new("opened", &stack.repo, 41);
    p.head_ref = "chatty".into();
    p.installation_id = Some(INSTALLATION);
    stack.fake.upsert_pr(
        &stack.repo,
        FakePr::new(41, &p.head_ref, Sha::new(&p.head_sha).unwrap()),
    );
    let (status, body) = stack
        .send("pull_request", &payloads::pull_request(&p))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    stack.settle().await.unwrap();
    let envs = stack.app.store().envs().unwrap();
    let env = envs
        .iter()
        .find(|e| e.pr.map(|n| n.0) == Some(41))
        .expect("the environment");
    let n = env.current_release().expect("a live release");
    let (path, _) = stack.app.log_location(&env.id, n);
    let mut previous = path.clone().into_os_string();
    previous.push(".1");
    let current = std::fs::metadata(&path).unwrap().len();
    let previous = std::fs::metadata(&previous).unwrap().len();
    assert!(
        current <= cap && previous <= cap,
        "{current} and {previous} bytes on disk"
    );

    let own = stack.addr.to_string();
    let url = format!(
        "/logs/{}/{}/{}/{n}",
        env.id.repo.owner(),
        env.id.repo.name(),
        env.id.slug
    );
    let (status, _, body) = get(stack.addr, &own, &url).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("[stagebot: the end of the log, at most its last 1024 KiB; earlier output is not shown]\n"),
        "{}",
        &body[..200]
    );
    assert!(
        body.contains("last words\n"),
        "{}",
        &body[body.len() - 300..]
    );
    assert!(
        body.trim_end()
            .ends_with("live at https://chatty.example.dev"),
        "{}",
        &body[body.len() - 300..]
    );
    assert!(body.len() as u64 <= 2 * cap + 200, "{} bytes", body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_bad_front_door_settings_with_one_sentence() {
    let fake = FakeGitHub::start().await;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let cases = [
        (
            "STAGEBOT_DELIVERY_RETENTION",
            "2d",
            "at least 3d: GitHub redelivers",
        ),
        ("STAGEBOT_DELIVERY_RETENTION", "soon", "must be a duration"),
        (
            "STAGEBOT_MAX_UNVERIFIED_BYTES",
            "1MiB",
            "at least 25600 KiB",
        ),
        ("STAGEBOT_MAX_UNVERIFIED_BYTES", "lots", "must be a size"),
        ("STAGEBOT_MAX_CONNECTIONS", "0", "above 0"),
        ("STAGEBOT_LOG_MAX", "1K", "at least 64 KiB"),
        ("STAGEBOT_DEAD_LETTERS_MAX", "-5", "whole number"),
        ("STAGEBOT_STORE_CACHE", "512KiB", "at least 1024 KiB"),
        ("STAGEBOT_STORE_CACHE", "lots", "must be a size"),
        ("STAGEBOT_PUBLIC_URL", "stagebot", "absolute URL"),
    ];
    for (name, value, needle) in cases {
        let child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("WEBHOOK_SECRET", SECRET)
            .env("APP_ID", fake.app_id().to_string())
            .env("PRIVATE_KEY", fake.private_key_pem().expose())
            .env("STAGEBOT_DATA_DIR", &data)
            .env("STAGEBOT_LISTEN", free_addr().to_string())
            .env(name, value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Killed if it started serving after all (then the exit code below is not 2).
        let mut child = KillOnDrop(Some(child));
        let started = Instant::now();
        while child.0.as_mut().unwrap().try_wait().unwrap().is_none() {
            if started.elapsed() > WAIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.0.as_mut().unwrap().kill();
        let out = child.0.take().unwrap().wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}={value}: {stderr}");
        assert!(
            lines[0].starts_with(&format!("error: {name} ")) && lines[0].contains(needle),
            "{name}={value}: {stderr}"
        );
        assert!(!data.exists(), "{name}={value}: the data dir was created");
    }
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
