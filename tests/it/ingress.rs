//! The webhook ingress contract (docs/architecture.md, "The parts and the flow") over real HTTP, and crash safety with the real
//! binary: a delivery answered 202 survives `kill -9`, a failing one is kept as a dead letter the
//! CLI lists and replays, and settings errors stop `serve` before it binds.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stagebot::event::payloads::{self, PrPayload};
use stagebot::fake_github::{FakeGitHub, FakePr, Fault, FaultKind};
use stagebot::store::{DeliveryRecord, DeliveryStatus, Store};
use stagebot::testkit::{GitRepo, INSTALLATION, SECRET, Stack, StackOptions, python_app_files};
use stagebot::types::{DeliveryId, RepoName, Sha};
use stagebot::webhook::{MAX_BODY, sign};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::flows::World;
use crate::support::{alive, pgid_of, processes_with, unique_token};

const BIN: &str = env!("CARGO_BIN_EXE_stagebot");
/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers

/// An answer: status, content type, JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    json: Value,
}

async fn stack() -> (Stack, TempDir) {
    stack_with(|_| {}).await
}

async fn stack_with(tweak: impl FnOnce(&mut StackOptions)) -> (Stack, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::new(&dir.path().join("data"));
    tweak(&mut opts);
    (Stack::start(opts).await.unwrap(), dir)
}

fn deliveries(stack: &Stack) -> Vec<DeliveryRecord> {
    stack.app.store().deliveries().unwrap()
}

/// Headers of a well-formed delivery of `body` signed with `secret`.
fn signed(event: &str, delivery: &str, secret: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("X-GitHub-Event", event.to_owned()),
        ("X-GitHub-Delivery", delivery.to_owned()),
        ("X-Hub-Signature-256", sign(secret, body)),
        ("Content-Type", "application/json".to_owned()),
    ]
}

fn without(mut headers: Vec<(&'static str, String)>, name: &str) -> Vec<(&'static str, String)> {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers
}

fn with(
    mut headers: Vec<(&'static str, String)>,
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name, value.to_owned()));
    headers
}

/// POST /webhook with exactly these headers and body (reqwest, Content-Length set).
async fn post(addr: SocketAddr, headers: &[(&str, String)], body: impl Into<Vec<u8>>) -> Reply {
    let client = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let mut req = client
        .post(format!("http://{addr}/webhook"))
        .body(body.into());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json = resp.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        content_type,
        json,
    }
}

/// What a raw request sends after its head.
enum RawBody {
    /// `Content-Length: <announced>`, then only `sent` bytes of it.
    Announced { announced: u64, sent: usize },
    /// `Transfer-Encoding: chunked`, this body in 64 KiB chunks, then the last chunk.
    Chunked(Vec<u8>),
}

/// One hand-written HTTP/1.1 request to `POST /webhook`. The body is written while the answer is
/// read, so a server that answers early (413) is seen answering early.
async fn raw(addr: SocketAddr, headers: &[(&str, String)], body: RawBody) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!("POST /webhook HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &body {
        RawBody::Announced { announced, .. } => {
            head.push_str(&format!("Content-Length: {announced}\r\n"))
        }
        RawBody::Chunked(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        match body {
            RawBody::Announced { sent, .. } => wr.write_all(&vec![b' '; sent]).await?,
            RawBody::Chunked(bytes) => {
                for chunk in bytes.chunks(64 * 1024) {
                    wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                    wr.write_all(chunk).await?;
                    wr.write_all(b"\r\n").await?;
                }
                wr.write_all(b"0\r\n\r\n").await?;
            }
        }
        wr.flush().await?;
        // Keep the write half open: closing it could end the exchange before the answer.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(reply) = parse_response(&buf) {
                return Some(reply);
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return parse_response(&buf),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    writer.abort();
    match read {
        Ok(Some(reply)) => reply,
        Ok(None) => panic!(
            "no complete HTTP answer; got {:?}",
            String::from_utf8_lossy(&buf)
        ),
        Err(_) => panic!(
            "no answer within {WAIT:?}; got {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
}

/// A complete HTTP/1.1 response with a Content-Length body, if `buf` holds one.
fn parse_response(buf: &[u8]) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut content_type = String::new();
    let mut length = 0usize;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_owned(),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let body = buf.get(end + 4..end + 4 + length)?;
    Some(Reply {
        status,
        content_type,
        json: serde_json::from_slice(body).unwrap_or(Value::Null),
    })
}

/// The answer is `status` with a JSON `{"error": "..."}` mentioning `needle`.
#[track_caller]
fn assert_error(reply: &Reply, status: u16, needle: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert!(
        reply.content_type.starts_with("application/json"),
        "{reply:?}"
    );
    let obj = reply
        .json
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {reply:?}"));
    assert_eq!(obj.len(), 1, "{reply:?}");
    let message = obj["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {reply:?}"));
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{message:?} should mention {needle:?}"
    );
}

/// Nothing was stored, and the rejected delivery id is still free: the same id, sent properly,
/// is accepted as new.
async fn assert_nothing_stored(stack: &Stack, rejected_id: &str) {
    assert_eq!(
        deliveries(stack),
        [],
        "a rejected request left a delivery record"
    );
    assert_eq!(
        stack.app.store().pending().unwrap(),
        [],
        "a rejected request reached the inbox"
    );
    let body = br#"{"action":"completed"}"#;
    let reply = post(
        stack.addr,
        &signed("check_run", rejected_id, SECRET, body),
        &body[..],
    )
    .await;
    assert_eq!(
        reply.status, 202,
        "the id of a rejected request was remembered: {reply:?}"
    );
}

/// A valid JSON object of exactly `len` bytes.
fn json_object_of_len(len: usize) -> Vec<u8> {
    let mut body = br#"{"zen":""#.to_vec();
    body.resize(len - 2, b'a');
    body.extend_from_slice(br#""}"#);
    assert_eq!(body.len(), len);
    body
}

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

// ---------------------------------------------------------------------------------------------
// 413

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_413_when_content_length_announces_more_than_25_mib() {
    let (stack, _dir) = stack().await;
    let id = "too-big-announced";
    // Well-formed headers otherwise; the server must answer without reading 25 MiB.
    let headers = signed("pull_request", id, SECRET, b"{}");
    let reply = raw(
        stack.addr,
        &headers,
        RawBody::Announced {
            announced: MAX_BODY as u64 + 1,
            sent: 1024,
        },
    )
    .await;
    assert_error(&reply, 413, "25 MiB");
    // Size is checked first: no headers at all is still 413.
    let reply = raw(
        stack.addr,
        &[],
        RawBody::Announced {
            announced: 100 * 1024 * 1024,
            sent: 0,
        },
    )
    .await;
    assert_error(&reply, 413, "25 MiB");
    assert_nothing_stored(&stack, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_413_for_a_chunked_body_over_25_mib_without_content_length() {
    let (stack, _dir) = stack().await;
    let id = "too-big-chunked";
    // A correctly signed JSON object: only its size is wrong.
    let body = json_object_of_len(MAX_BODY + 1);
    let headers = signed("pull_request", id, SECRET, &body);
    let reply = raw(stack.addr, &headers, RawBody::Chunked(body)).await;
    assert_error(&reply, 413, "25 MiB");
    assert_nothing_stored(&stack, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_accepts_a_chunked_body_of_exactly_25_mib() {
    let (stack, _dir) = stack().await;
    let body = json_object_of_len(MAX_BODY);
    let headers = signed("check_run", "exactly-the-limit", SECRET, &body);
    let reply = raw(stack.addr, &headers, RawBody::Chunked(body)).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = DeliveryId::new("exactly-the-limit").unwrap();
    let stored = stack
        .app
        .store()
        .payload(&id)
        .unwrap()
        .expect("payload stored");
    assert_eq!(stored.len(), MAX_BODY);
}

// ---------------------------------------------------------------------------------------------
// 400 headers, 401 signature, 400 JSON

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_400_without_the_event_or_the_delivery_header() {
    let (stack, _dir) = stack().await;
    let id = "missing-headers";
    let body = br#"{"action":"opened"}"#;
    let ok = signed("pull_request", id, SECRET, body);

    let reply = post(
        stack.addr,
        &without(ok.clone(), "X-GitHub-Event"),
        &body[..],
    )
    .await;
    assert_error(&reply, 400, "X-GitHub-Event");
    let reply = post(
        stack.addr,
        &without(ok.clone(), "X-GitHub-Delivery"),
        &body[..],
    )
    .await;
    assert_error(&reply, 400, "X-GitHub-Delivery");
    // Headers are checked before the signature.
    let reply = post(
        stack.addr,
        &without(
            without(ok.clone(), "X-GitHub-Delivery"),
            "X-Hub-Signature-256",
        ),
        &body[..],
    )
    .await;
    assert_error(&reply, 400, "X-GitHub-Delivery");
    let reply = post(
        stack.addr,
        &with(
            without(ok, "X-GitHub-Event"),
            "X-Hub-Signature-256",
            "sha256=00",
        ),
        &body[..],
    )
    .await;
    assert_error(&reply, 400, "X-GitHub-Event");
    assert_nothing_stored(&stack, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_401_for_a_missing_malformed_or_wrong_signature() {
    let (stack, _dir) = stack().await;
    let id = "bad-signature";
    let body = br#"{"action":"opened"}"#;
    let ok = signed("pull_request", id, SECRET, body);

    let reply = post(
        stack.addr,
        &without(ok.clone(), "X-Hub-Signature-256"),
        &body[..],
    )
    .await;
    assert_error(&reply, 401, "X-Hub-Signature-256");
    let good_hex = sign(SECRET, body).trim_start_matches("sha256=").to_owned();
    for malformed in [
        String::new(),
        "sha256=".to_owned(),
        "sha256=zz".to_owned(),
        good_hex.clone(),                      // no prefix
        format!("sha1={good_hex}"),            // another algorithm
        format!("sha256={}", &good_hex[..32]), // truncated
        format!("sha256={good_hex}00"),        // too long
    ] {
        let reply = post(
            stack.addr,
            &with(ok.clone(), "X-Hub-Signature-256", &malformed),
            &body[..],
        )
        .await;
        assert_error(&reply, 401, "X-Hub-Signature-256");
    }
    // Well-formed but wrong: another body, another secret.
    let reply = post(
        stack.addr,
        &with(ok.clone(), "X-Hub-Signature-256", &sign(SECRET, b"{}")),
        &body[..],
    )
    .await;
    assert_error(&reply, 401, "X-Hub-Signature-256");
    let reply = post(
        stack.addr,
        &signed("pull_request", id, "another-secret", body),
        &body[..],
    )
    .await;
    assert_error(&reply, 401, "X-Hub-Signature-256");
    // The signature is checked before the JSON.
    let reply = post(
        stack.addr,
        &signed("pull_request", id, "another-secret", b"[]"),
        "[]",
    )
    .await;
    assert_error(&reply, 401, "X-Hub-Signature-256");
    assert_nothing_stored(&stack, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_400_for_a_body_that_is_not_a_json_object() {
    let (stack, _dir) = stack().await;
    let id = "not-an-object";
    for body in [
        "[]",
        r#""x""#,
        "not json",
        "",
        "null",
        "42",
        r#"{"unterminated":"#,
    ] {
        let reply = post(
            stack.addr,
            &signed("pull_request", id, SECRET, body.as_bytes()),
            body,
        )
        .await;
        assert_error(&reply, 400, "JSON");
    }
    assert_nothing_stored(&stack, id).await;
}

// ---------------------------------------------------------------------------------------------
// 200 ping, 200 duplicate, 202 (unknown events too), rotation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_answers_ping_200_and_stores_nothing() {
    let (stack, _dir) = stack().await;
    let (status, body) = stack
        .send_as(
            "ping",
            "ping-1",
            &payloads::ping("Keep it logically awesome.", 42),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(deliveries(&stack), []);
    // A ping is still authenticated.
    let payload = serde_json::to_vec(&payloads::ping("zen", 42)).unwrap();
    let reply = post(
        stack.addr,
        &signed("ping", "ping-2", "another-secret", &payload),
        payload.clone(),
    )
    .await;
    assert_error(&reply, 401, "X-Hub-Signature-256");
}

fn pr_payload(
    repo: &RepoName,
    action: &str,
    number: u64,
    branch: &str,
    sha: &Sha,
    clone_url: &str,
) -> Value {
    let mut p = PrPayload::new(action, repo, number);
    p.head_ref = branch.to_owned();
    p.head_sha = sha.to_string();
    p.clone_url = Some(clone_url.to_owned());
    p.head_clone_url = Some(clone_url.to_owned());
    p.installation_id = Some(INSTALLATION);
    payloads::pull_request(&p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_answers_a_repeated_delivery_200_duplicate_and_processes_it_once() {
    let w = World::new("").await;
    let sha = w.commit("feature/dup", "v1", "");
    let clone = w.git.clone_url();
    w.stack.fake.upsert_pr(
        w.repo(),
        FakePr::new(9, "feature/dup", sha.clone()).clone_url(&clone),
    );
    let payload = pr_payload(w.repo(), "opened", 9, "feature/dup", &sha, &clone);
    let id = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

    let (status, body) = w.stack.send_as("pull_request", id, &payload).await.unwrap();
    assert_eq!(
        (status, &body),
        (202, &json!({"accepted": true, "delivery": id}))
    );
    // Redelivered before it was processed …
    let (status, body) = w.stack.send_as("pull_request", id, &payload).await.unwrap();
    assert_eq!((status, body), (200, json!({"duplicate": true})));
    w.stack.settle().await.unwrap();
    let calls = w.stack.fake.requests();
    let deployments = w.stack.fake.deployments(
        w.repo(),
        &format!(
            "preview/{}",
            stagebot::slug::preview_slug(Some(stagebot::types::PrNumber(9)), "feature/dup")
        ),
    );
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    // … and after: still not processed again.
    let (status, body) = w.stack.send_as("pull_request", id, &payload).await.unwrap();
    assert_eq!((status, body), (200, json!({"duplicate": true})));
    w.stack.settle().await.unwrap();
    assert_eq!(
        w.stack.fake.requests(),
        calls,
        "the duplicate made GitHub calls"
    );

    let records = deliveries(&w.stack);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].id.as_str(), id);
    assert_eq!(records[0].status, DeliveryStatus::Processed);
    assert_eq!(records[0].attempts, 0);
    assert_eq!(
        w.stack
            .fake
            .deployments(
                w.repo(),
                &format!(
                    "preview/{}",
                    stagebot::slug::preview_slug(Some(stagebot::types::PrNumber(9)), "feature/dup")
                )
            )
            .len(),
        1
    );

    // Stop the preview's process.
    w.stack
        .fake
        .set_pr_state(w.repo(), stagebot::types::PrNumber(9), false, false);
    let (status, _) = w
        .stack
        .send(
            "pull_request",
            &pr_payload(w.repo(), "closed", 9, "feature/dup", &sha, &clone),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    w.stack.settle().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_acknowledges_unknown_events_202_and_records_them_ignored() {
    let (stack, _dir) = stack().await;
    let payload = json!({"action": "completed", "check_run": {"id": 4, "status": "completed"}});
    let (status, body) = stack
        .send_as("check_run", "unknown-1", &payload)
        .await
        .unwrap();
    assert_eq!(
        (status, body),
        (202, json!({"accepted": true, "delivery": "unknown-1"}))
    );
    // Stored before the answer: the record exists whether or not the worker got to it.
    assert!(
        stack
            .app
            .store()
            .delivery(&DeliveryId::new("unknown-1").unwrap())
            .unwrap()
            .is_some()
    );
    stack.settle().await.unwrap();
    let records = deliveries(&stack);
    assert_eq!(records.len(), 1);
    match &records[0].status {
        DeliveryStatus::Ignored { reason } => assert!(reason.contains("check_run"), "{reason}"),
        other => panic!("expected ignored, got {other:?}"),
    }
    assert_eq!(stack.app.store().pending().unwrap(), []);
    assert!(
        // (the start-up catch-up reads the App's delivery log)
        stack
            .fake
            .requests()
            .iter()
            .all(|r| r.path == "/app/hook/deliveries"),
        "an unknown event called GitHub"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_accepts_every_secret_of_a_rotation() {
    let (stack, _dir) = stack_with(|o| o.secrets = "new-secret, old-secret".into()).await;
    let body = br#"{"action":"completed"}"#;
    let reply = post(
        stack.addr,
        &signed("check_run", "rot-new", "new-secret", body),
        &body[..],
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let reply = post(
        stack.addr,
        &signed("check_run", "rot-old", "old-secret", body),
        &body[..],
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let reply = post(
        stack.addr,
        &signed("check_run", "rot-other", SECRET, body),
        &body[..],
    )
    .await;
    assert_error(&reply, 401, "X-Hub-Signature-256");
    let mut ids: Vec<_> = deliveries(&stack)
        .into_iter()
        .map(|d| d.id.as_str().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["rot-new", "rot-old"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_200() {
    let (stack, _dir) = stack().await;
    let resp = reqwest::get(format!("{}/healthz", stack.url()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

// ---------------------------------------------------------------------------------------------
// The real binary

/// A `stagebot serve` child process, SIGKILLed if the test fails.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    /// Its data dir: the apps it left running are killed when the test is done with it.
    data_dir: std::path::PathBuf,
}

impl Server {
    fn start(fake: &FakeGitHub, data_dir: &Path, addr: SocketAddr, log: &Path) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("WEBHOOK_SECRET", SECRET)
            .env("APP_ID", fake.app_id().to_string())
            .env("PRIVATE_KEY", fake.private_key_pem().expose())
            .env("GITHUB_API_URL", fake.url())
            .env("STAGEBOT_DATA_DIR", data_dir)
            .env("STAGEBOT_LISTEN", addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Server {
            child: Some(child),
            addr,
            data_dir: data_dir.to_owned(),
        }
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("http://{}/healthz", self.addr);
        let child = self.child.as_mut().unwrap();
        poll("the server to answer /healthz", async || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("stagebot serve exited early: {status}");
            }
            let resp = client.get(&url).send().await.ok()?;
            (resp.status().as_u16() == 200).then_some(())
        })
        .await;
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for the graceful exit.
    async fn terminate(&mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = poll("stagebot serve to exit after SIGTERM", async || {
            child.try_wait().unwrap()
        })
        .await;
        assert!(status.success(), "stagebot serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // `serve` leaves its apps running for the next start to adopt; a test is done with them.
        crate::support::kill_recorded_groups(&self.data_dir);
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Run the binary (not `serve`) on a data dir; returns (exit code, stdout, stderr).
fn cli(data_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("STAGEBOT_DATA_DIR", data_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The store of a data dir no server holds (sled allows one process at a time).
fn read_store<T>(data_dir: &Path, f: impl FnOnce(&Store) -> T) -> T {
    let store = Store::open_waiting(data_dir, Duration::from_secs(10)).unwrap();
    f(&store)
}

fn record(store: &Store, id: &str) -> DeliveryRecord {
    store
        .delivery(&DeliveryId::new(id).unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("no delivery {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_answered_202_survives_kill_9_and_is_processed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let repo = RepoName::new("acme", "webapp").unwrap();
    let fake = FakeGitHub::start().await;
    fake.add_installation(INSTALLATION, repo.owner());
    fake.add_repo(&repo, "main", INSTALLATION);
    let files = python_app_files("");
    let (git, _) = GitRepo::init(&dir.path().join("src"), &files).unwrap();
    let sha = git.commit("feature/crash", &files, "crash").unwrap();
    for (path, content) in &files {
        fake.set_file(&repo, sha.as_str(), path, content);
    }
    fake.upsert_pr(
        &repo,
        FakePr::new(11, "feature/crash", sha.clone()).clone_url(&git.clone_url()),
    );
    fake.upsert_pr(&repo, FakePr::new(12, "feature/draft", sha.clone()).draft());

    let addr = free_addr();
    let mut server = Server::start(&fake, &data, addr, &log);
    server.wait_healthy().await;
    // GitHub fails every repository call: nothing can finish.
    fake.inject_fault(Fault::new("/repos/", 100_000, FaultKind::Status500));

    let opened = serde_json::to_vec(&pr_payload(
        &repo,
        "opened",
        11,
        "feature/crash",
        &sha,
        &git.clone_url(),
    ))
    .unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "crash-opened", SECRET, &opened),
        opened.clone(),
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    // The worker is inside that delivery, stuck on GitHub …
    poll("the worker to hit the failing GitHub", async || {
        fake.requests()
            .iter()
            .any(|r| r.path.starts_with("/repos/") && r.status == 500)
            .then_some(())
    })
    .await;
    // … when a second one arrives; the process dies right after answering it.
    let mut draft = PrPayload::new("opened", &repo, 12);
    draft.draft = true;
    draft.head_ref = "feature/draft".into();
    draft.head_sha = sha.to_string();
    draft.installation_id = Some(INSTALLATION);
    let draft = serde_json::to_vec(&payloads::pull_request(&draft)).unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "crash-draft", SECRET, &draft),
        draft.clone(),
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    server.kill9();

    let pending: Vec<String> = read_store(&data, |s| {
        s.pending()
            .unwrap()
            .into_iter()
            .map(|d| d.id.as_str().to_owned())
            .collect()
    });
    assert_eq!(
        pending,
        ["crash-opened", "crash-draft"],
        "the inbox after kill -9"
    );

    fake.clear_faults();
    let mut server = Server::start(&fake, &data, addr, &log);
    server.wait_healthy().await;
    let client = reqwest::Client::new();
    let env = poll("the preview to go live after the restart", async || {
        let envs: Value = client
            .get(format!("http://{addr}/api/environments"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let env = envs
            .as_array()?
            .iter()
            .find(|e| {
                e["slug"]
                    == stagebot::slug::preview_slug(
                        Some(stagebot::types::PrNumber(11)),
                        "feature/crash",
                    )
                    .as_str()
            })?
            .clone();
        assert_ne!(
            env["state"],
            "failed",
            "{env}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        (env["state"] == "live").then_some(env)
    })
    .await;
    let url = env["url"].as_str().unwrap().to_owned();

    // Tear the preview down so its process does not outlive the test.
    fake.set_pr_state(&repo, stagebot::types::PrNumber(11), false, false);
    let closed = serde_json::to_vec(&pr_payload(
        &repo,
        "closed",
        11,
        "feature/crash",
        &sha,
        &git.clone_url(),
    ))
    .unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "crash-closed", SECRET, &closed),
        closed.clone(),
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    poll("the preview to be torn down", async || {
        let envs: Value = client
            .get(format!("http://{addr}/api/environments"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let env = envs
            .as_array()?
            .iter()
            .find(|e| {
                e["slug"]
                    == stagebot::slug::preview_slug(
                        Some(stagebot::types::PrNumber(11)),
                        "feature/crash",
                    )
                    .as_str()
            })?
            .clone();
        (env["state"] == "destroyed").then_some(())
    })
    .await;
    server.terminate().await;

    read_store(&data, |s| {
        assert_eq!(s.pending().unwrap(), [], "the inbox after the restart");
        assert_eq!(record(s, "crash-opened").status, DeliveryStatus::Processed);
        assert!(
            matches!(
                record(s, "crash-draft").status,
                DeliveryStatus::Processed | DeliveryStatus::Ignored { .. }
            ),
            "{:?}",
            record(s, "crash-draft")
        );
        assert_eq!(record(s, "crash-closed").status, DeliveryStatus::Processed);
    });
    // Deployed once, with the URL the preview had.
    let deps = fake.deployments(
        &repo,
        &format!(
            "preview/{}",
            stagebot::slug::preview_slug(Some(stagebot::types::PrNumber(11)), "feature/crash")
        ),
    );
    assert_eq!(deps.len(), 1, "{deps:?}");
    assert!(
        deps[0]
            .statuses
            .iter()
            .any(|s| s.environment_url.as_deref() == Some(url.as_str())),
        "{deps:?}"
    );
}

/// Group commit: a burst of concurrent deliveries shares flushes, and still every one answered
/// `202` is on disk when the process is killed right after the last answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_answered_202_under_group_commit_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let fake = FakeGitHub::start().await;
    let addr = free_addr();
    let mut server = Server::start(&fake, &data, addr, &log);
    server.wait_healthy().await;

    const BURST: usize = 48;
    let payload =
        serde_json::to_vec(&json!({"action": "completed", "check_run": {"id": 4}})).unwrap();
    let mut requests = Vec::new();
    for i in 0..BURST {
        let body = payload.clone();
        requests.push(tokio::spawn(async move {
            let id = format!("burst-{i}");
            let reply = post(addr, &signed("check_run", &id, SECRET, &body), body.clone()).await;
            (id, reply.status)
        }));
    }
    let mut accepted = Vec::new();
    for r in requests {
        let (id, status) = r.await.unwrap();
        assert_eq!(status, 202, "{id}");
        accepted.push(id);
    }
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let flushes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stagebot_store_flushes_total "))
        .unwrap_or_else(|| panic!("no stagebot_store_flushes_total in {metrics}"))
        .parse()
        .unwrap();
    assert!(flushes > 0, "{metrics}");
    server.kill9();

    let stored: Vec<String> = read_store(&data, |s| {
        accepted
            .iter()
            .filter(|id| {
                s.delivery(&DeliveryId::new(id.as_str()).unwrap())
                    .unwrap()
                    .is_some()
            })
            .cloned()
            .collect()
    });
    assert_eq!(
        stored, accepted,
        "every delivery answered 202 is on disk after kill -9"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_past_its_retries_is_kept_listed_by_the_cli_and_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opts = || StackOptions::new(&data);
    let stack = Stack::start(opts()).await.unwrap();
    // An ignored delivery, so the listing has something that is not failing.
    let (status, _) = stack
        .send_as("check_run", "fine-1", &json!({"action": "completed"}))
        .await
        .unwrap();
    assert_eq!(status, 202);
    stack.settle().await.unwrap();

    // GitHub answers 500 to every repository call, longer than every retry budget.
    stack
        .fake
        .inject_fault(Fault::new("/repos/", 100_000, FaultKind::Status500));
    let mut p = PrPayload::new("opened", &stack.repo, 21);
    p.draft = true; // processed without deploying anything once GitHub is back
    stack.fake.upsert_pr(
        &stack.repo,
        FakePr::new(21, &p.head_ref, Sha::new(&p.head_sha).unwrap()).draft(),
    );
    p.installation_id = Some(INSTALLATION);
    let id = "doomed-1";
    let (status, body) = stack
        .send_as("pull_request", id, &payloads::pull_request(&p))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let dead = poll("the delivery to become a dead letter", async || {
        let r = stack
            .app
            .store()
            .delivery(&DeliveryId::new(id).unwrap())
            .unwrap()?;
        (r.status == DeliveryStatus::Dead).then_some(r)
    })
    .await;
    let max_attempts = stack.app.settings().delivery_retry.max_attempts;
    assert_eq!(dead.attempts, max_attempts, "{dead:?}");
    let error = dead.last_error.clone().expect("the error is kept");
    assert!(error.contains("500"), "{error}");
    assert!(
        !error.contains("GitHub: GitHub:"),
        "the error text stutters: {error}"
    );
    assert!(dead.is_failing());
    assert_eq!(
        stack.app.store().pending().unwrap(),
        [],
        "a dead letter leaves the inbox"
    );

    // While the server holds the store, the CLI asks it over the admin socket.
    let (code, out, err) = cli(&data, &["deliveries", "list", "--failed"]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{out}"));
    assert!(
        line.contains("dead") && line.contains(&format!(" {max_attempts} ")),
        "{line}"
    );
    assert!(
        !out.contains("fine-1"),
        "--failed lists a delivery that did not fail:\n{out}"
    );

    let fake = stack.stop().await;
    fake.clear_faults();

    // The CLI on the stopped server's data dir.
    let (code, out, err) = cli(&data, &["deliveries", "list", "--failed"]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{out}"));
    assert!(line.contains("dead"), "{line}");
    assert!(line.contains("pull_request"), "{line}");
    assert!(line.contains(&format!(" {max_attempts} ")), "{line}");
    assert!(
        line.contains(error.lines().next().unwrap()),
        "{line}\nvs {error}"
    );
    assert!(
        !out.contains("fine-1"),
        "--failed lists a delivery that did not fail:\n{out}"
    );
    let (code, out, err) = cli(&data, &["deliveries", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fine-1") && out.contains(id), "{out}");

    let (code, out, err) = cli(&data, &["deliveries", "replay", id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(id), "{out}");
    read_store(&data, |s| {
        let r = record(s, id);
        assert_eq!(r.status, DeliveryStatus::Pending, "{r:?}");
        assert_eq!(s.pending().unwrap().len(), 1);
    });

    // Back in the inbox: processed once the server runs and GitHub answers.
    let stack = Stack::start_with(fake, opts()).await.unwrap();
    stack.settle().await.unwrap();
    let r = stack
        .app
        .store()
        .delivery(&DeliveryId::new(id).unwrap())
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            r.status,
            DeliveryStatus::Processed | DeliveryStatus::Ignored { .. }
        ),
        "{r:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_bad_settings_with_exit_2_and_one_sentence_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Hold the port: a server that bound before checking its settings would fail differently.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let fake = FakeGitHub::start().await;
    let key = fake.private_key_pem().expose().to_owned();
    let app_id = fake.app_id().to_string();
    let base: Vec<(&str, &str)> = vec![
        ("APP_ID", app_id.as_str()),
        ("PRIVATE_KEY", key.as_str()),
        ("STAGEBOT_LISTEN", ""),
    ];
    let listen = addr.to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "WEBHOOK_SECRET"),
        (vec![("WEBHOOK_SECRET", " , ")], "WEBHOOK_SECRET"),
        (vec![("WEBHOOK_SECRET", "s"), ("APP_ID", "")], "APP_ID"),
        (
            vec![("WEBHOOK_SECRET", "s"), ("PRIVATE_KEY", "")],
            "PRIVATE_KEY",
        ),
        (
            vec![
                ("WEBHOOK_SECRET", "s"),
                ("STAGEBOT_RECONCILE_INTERVAL", "soon"),
            ],
            "STAGEBOT_RECONCILE_INTERVAL",
        ),
    ];
    for (overrides, needle) in cases {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").env_clear().env("STAGEBOT_DATA_DIR", &data);
        for (k, v) in base.iter().chain(&overrides) {
            match (*k, *v) {
                ("STAGEBOT_LISTEN", _) => cmd.env(k, &listen),
                (_, "") => cmd.env_remove(k),
                _ => cmd.env(k, v),
            };
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = poll("stagebot serve to exit", async || child.try_wait().unwrap()).await;
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.code(), Some(2), "{needle}: {stderr}");
        let lines: Vec<_> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{needle}: one line expected, got {stderr:?}"
        );
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(needle),
            "{stderr:?}"
        );
        assert!(
            !lines[0].contains("cannot listen"),
            "it tried to bind: {stderr:?}"
        );
        assert!(!data.exists(), "{needle}: the data dir was created");
    }
    // We held the port throughout: a server that had tried to bind would have said "cannot
    // listen" (asserted above). Binding it again after dropping it would race with the other
    // tests' free ports.
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_after_the_header_read_timeout() {
    let (stack, _dir) = stack_with(|o| o.header_read_timeout = Duration::from_millis(300)).await;
    let mut conn = TcpStream::connect(stack.addr).await.unwrap();
    // half a request, then nothing
    conn.write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was held open");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(deliveries(&stack).is_empty());
}

/// `GET` a preview URL through the server at `addr` (the preview's host resolves to it).
async fn get_via(addr: SocketAddr, url: &str) -> Option<(u16, String)> {
    let host = reqwest::Url::parse(url).ok()?.host_str()?.to_owned();
    let client = reqwest::Client::builder()
        .resolve(&host, addr)
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = client.get(url).send().await.ok()?;
    Some((resp.status().as_u16(), resp.text().await.ok()?))
}

async fn env_state(addr: SocketAddr, slug: &str) -> Option<(String, String)> {
    let envs: Value = reqwest::get(format!("http://{addr}/api/environments"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let env = envs.as_array()?.iter().find(|e| e["slug"] == slug)?;
    Some((
        env["state"].as_str()?.to_owned(),
        env["url"].as_str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_interrupted_by_kill_9_is_finished_after_restart() {
    // a build slow enough to be killed in the middle of
    let BinWorld {
        dir: _dir,
        data,
        log,
        repo,
        fake,
        git,
        files,
        ..
    } = BinWorld::new(python_app_files("build: sleep 2\n")).await;
    let sha = git.commit("slow", &files, "slow").unwrap();
    fake.upsert_pr(
        &repo,
        FakePr::new(21, "slow", sha.clone()).clone_url(&git.clone_url()),
    );
    let slug = stagebot::slug::preview_slug(Some(stagebot::types::PrNumber(21)), "slow");

    let addr = free_addr();
    let mut server = Server::start(&fake, &data, addr, &log);
    server.wait_healthy().await;
    let payload = pr_payload(&repo, "opened", 21, "slow", &sha, &git.clone_url());
    let body = serde_json::to_vec(&payload).unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "crash-mid-deploy", SECRET, &body),
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 202);
    poll("the deploy to start", async || {
        let (state, _) = env_state(addr, slug.as_str()).await?;
        (state == "deploying").then_some(())
    })
    .await;
    server.kill9();

    let mut server = Server::start(&fake, &data, addr, &log);
    server.wait_healthy().await;
    let url = poll("the interrupted deploy to finish", async || {
        let (state, url) = env_state(addr, slug.as_str()).await?;
        (state == "live").then_some(url)
    })
    .await;
    let served = poll("the preview to answer", async || {
        get_via(addr, &url).await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(served.1, sha.as_str());
    server.terminate().await;
    read_store(&data, |store| {
        let id = stagebot::types::EnvId {
            repo: repo.clone(),
            slug: slug.clone(),
        };
        assert_eq!(
            store.releases(&id).unwrap().len(),
            1,
            "one release, not two"
        );
    });
}

/// The crash window of issue 15: GitHub created the deployment but stagebot died before it
/// recorded the id. The fake applies the `POST` and holds its answer back until stagebot is
/// killed; after the restart the deployment is found by its payload key and adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_creating_a_deployment_and_recording_it_leaves_one_deployment() {
    use stagebot::fake_github::{Method, Stall};
    use stagebot::reporter::DeploymentPayload;
    let BinWorld {
        dir: _dir,
        data,
        log,
        repo,
        fake,
        git,
        files,
        ..
    } = BinWorld::new(python_app_files("")).await;
    let sha = git.commit("stall", &files, "stall").unwrap();
    fake.upsert_pr(
        &repo,
        FakePr::new(31, "stall", sha.clone()).clone_url(&git.clone_url()),
    );
    let slug = stagebot::slug::preview_slug(Some(stagebot::types::PrNumber(31)), "stall");
    let environment = format!("preview/{slug}");
    let env_id = stagebot::types::EnvId {
        repo: repo.clone(),
        slug: slug.clone(),
    };
    fake.stall(Stall {
        method: Method::POST,
        path: "/repos/acme/webapp/deployments".into(),
        times: 1,
    });

    let addr = free_addr();
    let mut server = Server::start(&fake, &data, addr, &log);
    server.wait_healthy().await;
    let body = serde_json::to_vec(&pr_payload(
        &repo,
        "opened",
        31,
        "stall",
        &sha,
        &git.clone_url(),
    ))
    .unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "stall-opened", SECRET, &body),
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    poll(
        "GitHub to create the deployment and hold its answer",
        async || (fake.all_deployments(&repo).len() == 1 && fake.stalled() == 1).then_some(()),
    )
    .await;
    server.kill9();
    fake.release_stalled();

    // The intent survived; the deployment's id never reached the store.
    let attempt = read_store(&data, |s| {
        let attempts = s.attempts(&env_id).unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:#?}");
        assert_eq!(attempts[0].deployment_id, None);
        attempts[0].attempt
    });

    let mut server = Server::start(&fake, &data, addr, &log);
    server.wait_healthy().await;
    poll("the preview to go live after the restart", async || {
        let (state, _) = env_state(addr, slug.as_str()).await?;
        (state == "live").then_some(())
    })
    .await;
    poll("the live report", async || {
        let deps = fake.deployments(&repo, &environment);
        (deps.iter().any(|d| d.last_state() == Some("success"))).then_some(())
    })
    .await;
    server.terminate().await;

    let deps = fake.deployments(&repo, &environment);
    assert_eq!(
        deps.len(),
        1,
        "exactly one deployment for the attempt: {deps:#?}"
    );
    let states: Vec<&str> = deps[0].statuses.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["in_progress", "success"], "{deps:#?}");
    let key = DeploymentPayload::from_json(&deps[0].payload).unwrap();
    assert_eq!(
        (key.environment.as_str(), key.attempt),
        (environment.as_str(), attempt)
    );
    assert_eq!(
        fake.requests_to("GET", "/repos/acme/webapp/deployments")
            .len(),
        1,
        "the restarted report looked for the deployment once"
    );
    read_store(&data, |s| {
        let attempts = s.attempts(&env_id).unwrap();
        assert_eq!(attempts.len(), 1, "the resumed deploy is the same attempt");
        assert_eq!(attempts[0].deployment_id, Some(deps[0].id));
        assert_eq!(attempts[0].state.as_deref(), Some("success"));
    });
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("adopted the deployment created before a crash"),
        "the log says what happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_then_restore_gives_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let fake = FakeGitHub::start().await;
    let addr = free_addr();
    let mut server = Server::start(&fake, &data, addr, &log);
    server.wait_healthy().await;
    for n in 0..5 {
        let body = serde_json::to_vec(&json!({ "zen": n, "action": "completed" })).unwrap();
        let reply = post(
            addr,
            &signed("check_run", &format!("backup-{n}"), SECRET, &body),
            body.clone(),
        )
        .await;
        assert_eq!(reply.status, 202);
    }
    let file = dir.path().join("backup.json");
    let (code, out, err) = cli(&data, &["backup", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("via the running server"), "{out}");
    server.terminate().await;

    let restored = dir.path().join("restored");
    let (code, out, err) = cli(&restored, &["restore", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // a second restore into a data dir that now holds data is refused without --force
    let (code, _, err) = cli(&restored, &["restore", file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    let original = read_store(&data, |s| s.dump().unwrap());
    let copy = read_store(&restored, |s| s.dump().unwrap());
    // the export was taken before the last deliveries finished, so compare what it held
    assert_eq!(
        original["deliveries"].len(),
        copy["deliveries"].len(),
        "every delivery made it"
    );
    assert_eq!(original["environments"], copy["environments"]);
}

/// The README's first command: `stagebot demo` runs the whole flow and cleans up after itself.
#[test]
fn the_demo_runs_the_whole_flow() {
    let addr = free_addr();
    let out = Command::new(BIN)
        .args(["demo", "--listen", &addr.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "is live at http://pr-1-feature-login-page",
        "Hello from the login page, v1",
        "Hello from the login page, v2 — preview/",
        "Hello from the login page, v2 — staging at",
        "Hello from the login page, v2 — production at",
        "now answers 404 (the preview is gone)",
        "production                       ",
        "done.",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // nothing left listening
    assert!(std::net::TcpStream::connect(addr).is_err());
}

// ---------------------------------------------------------------------------------------------
// Adoption: apps survive restarts of stagebot; nothing of a previous run is left behind

/// Processes of `python3 app.py` whose environment carries `STAGEBOT_BRANCH=<prefix>…`, with
/// the `STAGEBOT_SHA` they serve.
fn apps_of(prefix: &str) -> Vec<(i32, String, String)> {
    let marker = format!("STAGEBOT_BRANCH={prefix}");
    processes_with("app.py")
        .into_iter()
        // Not bwrap (whose arguments name the command too): the app itself.
        .filter(|(_, cmd)| {
            let program = cmd.split(' ').next().unwrap_or_default();
            !program.ends_with("bwrap")
        })
        .filter_map(|(pid, _)| {
            let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let vars: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            let branch = vars.iter().find(|v| v.starts_with(&marker))?;
            let sha = vars
                .iter()
                .find_map(|v| v.strip_prefix("STAGEBOT_SHA="))
                .unwrap_or_default();
            Some((
                pid,
                branch["STAGEBOT_BRANCH=".len()..].to_owned(),
                sha.to_owned(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_the_live_app_and_stops_what_belongs_to_no_live_release() {
    // The app logs every request to stderr: an adopted app's output still reaches its log.
    let files: Vec<(&str, String)> = python_app_files("")
        .into_iter()
        .map(|(p, c)| {
            (
                p,
                c.replace("    def log_message(self, *a):\n        pass\n", ""),
            )
        })
        .collect();
    assert!(
        !files[0].1.contains("log_message"),
        "the app logs its requests"
    );
    let BinWorld {
        dir: _dir,
        data,
        log,
        repo,
        fake,
        git,
        files,
        ..
    } = BinWorld::new(files).await;
    let branch = format!("adopt-{}", unique_token());
    let sha = git.commit(&branch, &files, "adopt").unwrap();
    fake.upsert_pr(
        &repo,
        FakePr::new(41, &branch, sha.clone()).clone_url(&git.clone_url()),
    );
    let slug = stagebot::slug::preview_slug(Some(stagebot::types::PrNumber(41)), &branch);
    let env_id = stagebot::types::EnvId {
        repo: repo.clone(),
        slug: slug.clone(),
    };
    let addr = free_addr();
    let serves = async |want: &Sha| {
        poll("the preview to serve its commit", async || {
            let (state, url) = env_state(addr, slug.as_str()).await?;
            let served = get_via(addr, &url).await?;
            (state == "live" && served == (200, want.to_string())).then_some(())
        })
        .await
    };

    let mut first = Server::start(&fake, &data, addr, &log);
    first.wait_healthy().await;
    let body = serde_json::to_vec(&pr_payload(
        &repo,
        "opened",
        41,
        &branch,
        &sha,
        &git.clone_url(),
    ))
    .unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "adopt-1", SECRET, &body),
        body,
    )
    .await;
    assert_eq!(reply.status, 202);
    serves(&sha).await;
    poll("the live report", async || {
        let deps = fake.all_deployments(&repo);
        deps.iter()
            .any(|d| d.last_state() == Some("success"))
            .then_some(())
    })
    .await;
    let pid = pgid_of(&data, slug.as_str(), 1).expect("the live release's record");
    let deployments = fake.all_deployments(&repo).len();

    // A graceful stop leaves the app running; the next start adopts it.
    first.terminate().await;
    assert!(alive(pid), "a graceful stop of stagebot keeps the live app");
    let mut second = Server::start(&fake, &data, addr, &log);
    second.wait_healthy().await;
    serves(&sha).await;
    assert_eq!(
        pgid_of(&data, slug.as_str(), 1),
        Some(pid),
        "the same process"
    );

    // So does kill -9.
    second.kill9();
    assert!(alive(pid), "kill -9 of stagebot keeps the live app");
    let mut third = Server::start(&fake, &data, addr, &log);
    third.wait_healthy().await;
    serves(&sha).await;
    assert_eq!(
        pgid_of(&data, slug.as_str(), 1),
        Some(pid),
        "the same process"
    );
    assert_eq!(apps_of(&branch).len(), 1, "{:?}", apps_of(&branch));
    // Its requests (made while no stagebot read its output, and since) are in the release log.
    let release_log = data.join(format!("logs/acme/webapp/{slug}/1.log"));
    poll("the adopted app's output in its log", async || {
        let text = std::fs::read_to_string(&release_log).ok()?;
        let (_, after) = text.rsplit_once("was adopted")?;
        after.contains("\"GET / HTTP/1.1\" 200").then_some(())
    })
    .await;
    assert_eq!(
        fake.all_deployments(&repo).len(),
        deployments,
        "an adopted app is no new deployment"
    );

    // An app that died while stagebot was down is started again (the same release).
    third.kill9();
    // SAFETY: killpg(2) on the group this test's app was recorded with; no memory involved.
    unsafe { libc::killpg(pid, libc::SIGKILL) };
    let mut fourth = Server::start(&fake, &data, addr, &log);
    fourth.wait_healthy().await;
    serves(&sha).await;
    let restarted = pgid_of(&data, slug.as_str(), 1).expect("a record of the restarted app");
    assert_ne!(restarted, pid, "a new process");

    // A deploy that never became healthy, cut short by kill -9: its group is left behind.
    let token = unique_token();
    let hang = [(
        ".github/stagebot.yml",
        format!("start: exec sleep 60.{token}\ntimeouts: {{ health: 20s }}\n"),
    )];
    let hang_sha = git.commit(&branch, &hang, "hangs").unwrap();
    fake.upsert_pr(
        &repo,
        FakePr::new(41, &branch, hang_sha.clone()).clone_url(&git.clone_url()),
    );
    let body = serde_json::to_vec(&pr_payload(
        &repo,
        "synchronize",
        41,
        &branch,
        &hang_sha,
        &git.clone_url(),
    ))
    .unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "adopt-2", SECRET, &body),
        body,
    )
    .await;
    assert_eq!(reply.status, 202);
    let leftover = poll("the hanging start to run", async || {
        let found = processes_with(&token);
        (!found.is_empty()).then_some(found)
    })
    .await;
    fourth.kill9();
    // Back to a commit that works, while stagebot is down (the webhook is delivered after).
    let fixed = git.commit(&branch, &files, "fixed").unwrap();
    fake.upsert_pr(
        &repo,
        FakePr::new(41, &branch, fixed.clone()).clone_url(&git.clone_url()),
    );
    let mut fifth = Server::start(&fake, &data, addr, &log);
    fifth.wait_healthy().await;
    // SIGKILL is sent before the listener is served; the kernel reaps asynchronously, so under
    // load a killed process can still show for a moment.
    for (pid, cmd) in &leftover {
        poll(
            &format!("the failed deploy's process {pid} ({cmd}) stopped at start-up"),
            async || (!alive(*pid)).then_some(()),
        )
        .await;
    }
    let body = serde_json::to_vec(&pr_payload(
        &repo,
        "synchronize",
        41,
        &branch,
        &fixed,
        &git.clone_url(),
    ))
    .unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "adopt-3", SECRET, &body),
        body,
    )
    .await;
    assert_eq!(reply.status, 202);
    serves(&fixed).await;
    poll("one app process of the branch", async || {
        let apps = apps_of(&branch);
        (apps.len() == 1 && apps[0].2 == fixed.as_str()).then_some(())
    })
    .await;
    // Closing the PR stops an adopted app like any other.
    fifth.terminate().await;
    let adopted = pgid_of(&data, slug.as_str(), 2).expect("the record of release 2");
    let mut sixth = Server::start(&fake, &data, addr, &log);
    sixth.wait_healthy().await;
    serves(&fixed).await;
    assert_eq!(pgid_of(&data, slug.as_str(), 2), Some(adopted), "adopted");
    fake.set_pr_state(&repo, stagebot::types::PrNumber(41), false, false);
    let body = serde_json::to_vec(&pr_payload(
        &repo,
        "closed",
        41,
        &branch,
        &fixed,
        &git.clone_url(),
    ))
    .unwrap();
    let reply = post(
        addr,
        &signed("pull_request", "adopt-4", SECRET, &body),
        body,
    )
    .await;
    assert_eq!(reply.status, 202);
    poll("the preview to be torn down", async || {
        let (state, _) = env_state(addr, slug.as_str()).await?;
        (state == "destroyed").then_some(())
    })
    .await;
    assert!(
        !alive(adopted),
        "the adopted app is stopped by the teardown"
    );
    assert_eq!(apps_of(&branch), [], "no app of the closed PR is left");
    sixth.terminate().await;
    let releases = read_store(&data, |s| s.releases(&env_id).unwrap());
    let shas: Vec<&str> = releases.iter().map(|r| r.sha.as_str()).collect();
    assert_eq!(
        shas.first(),
        Some(&sha.as_str()),
        "restarts made no new release: {shas:?}"
    );
    assert!(
        !shas.contains(&hang_sha.as_str()),
        "the hanging commit never went live"
    );
    assert_eq!(shas.last(), Some(&fixed.as_str()));
    assert_eq!(shas.len(), 2, "{shas:?}");
    assert!(
        fake.all_deployments(&repo).len() > deployments,
        "the fixed commit is a new deployment"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("adopted a live release"),
        "the log says so"
    );
}

/// Issue 9 and 15: stagebot is killed with SIGKILL 4 times during a burst of deliveries (6 PRs,
/// 3 pushes each, 2 closed). Nothing is lost, no deployment is duplicated for one attempt, no app
/// process of a previous run is left behind, and every PR converges to its newest commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_nothing_duplicates_nothing_and_leaves_no_process() {
    use stagebot::reporter::DeploymentPayload;
    const PRS: u64 = 6;
    const PUSHES: usize = 3;
    let BinWorld {
        dir: _dir,
        data,
        log,
        repo,
        fake,
        git,
        files,
        ..
    } = BinWorld::new(python_app_files("")).await;
    let prefix = format!("burst-{}-", unique_token());
    let clone = git.clone_url();
    // Every delivery: (id, payload, the PR state the fake shows once it is sent).
    let mut deliveries: Vec<(String, Vec<u8>, FakePr, bool)> = Vec::new();
    let mut newest = std::collections::BTreeMap::new();
    for push in 0..PUSHES {
        for n in 1..=PRS {
            let branch = format!("{prefix}{n}");
            let mut f = files.clone();
            f.push(("version.txt", format!("{n}.{push}")));
            let sha = git.commit(&branch, &f, &format!("push {push}")).unwrap();
            let action = if push == 0 { "opened" } else { "synchronize" };
            let body =
                serde_json::to_vec(&pr_payload(&repo, action, 100 + n, &branch, &sha, &clone))
                    .unwrap();
            let pr = FakePr::new(100 + n, &branch, sha.clone()).clone_url(&clone);
            deliveries.push((format!("burst-{n}-{push}"), body, pr, true));
            newest.insert(n, (branch, sha));
        }
    }
    let closed = [1u64, 2];
    for n in closed {
        let (branch, sha) = &newest[&n];
        let mut p = PrPayload::new("closed", &repo, 100 + n);
        p.head_ref = branch.clone();
        p.head_sha = sha.to_string();
        p.clone_url = Some(clone.clone());
        p.head_clone_url = Some(clone.clone());
        p.installation_id = Some(INSTALLATION);
        let body = serde_json::to_vec(&payloads::pull_request(&p)).unwrap();
        let pr = FakePr::new(100 + n, branch, sha.clone()).clone_url(&clone);
        deliveries.push((format!("burst-{n}-closed"), body, pr, false));
    }

    let addr = free_addr();
    let mut servers = vec![Server::start(&fake, &data, addr, &log)];
    let kills = 4;
    let per_kill = deliveries.len().div_ceil(kills);
    for (i, (id, body, pr, open)) in deliveries.iter().enumerate() {
        if i % per_kill == 0 && i > 0 {
            // Let some work start, then crash in the middle of it.
            tokio::time::sleep(Duration::from_millis(300 + 150 * (i as u64 % 3))).await;
            servers.last_mut().unwrap().kill9();
            servers.push(Server::start(&fake, &data, addr, &log));
        }
        servers.last_mut().unwrap().wait_healthy().await;
        fake.upsert_pr(&repo, pr.clone());
        if !open {
            fake.set_pr_state(&repo, pr.number, false, false);
        }
        let reply = post(
            addr,
            &signed("pull_request", id, SECRET, body),
            body.clone(),
        )
        .await;
        assert_eq!(reply.status, 202, "{id}: {reply:?}");
    }
    // The last kill comes after the last delivery.
    tokio::time::sleep(Duration::from_millis(400)).await;
    servers.last_mut().unwrap().kill9();
    servers.push(Server::start(&fake, &data, addr, &log));
    let last_restart = Instant::now();
    servers.last_mut().unwrap().wait_healthy().await;

    // Converged: every open PR serves its newest commit, every closed PR's preview is gone.
    poll("every PR to converge", async || {
        for (n, (branch, sha)) in &newest {
            let slug =
                stagebot::slug::preview_slug(Some(stagebot::types::PrNumber(100 + n)), branch);
            let (state, url) = env_state(addr, slug.as_str()).await?;
            if closed.contains(n) {
                if state != "destroyed" {
                    return None;
                }
            } else if state != "live" || get_via(addr, &url).await? != (200, sha.to_string()) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let converged = last_restart.elapsed();
    eprintln!("measure: converged {converged:?} after the last restart");

    // No leftover process: exactly one app per open PR, serving its newest commit.
    poll("only the live releases' apps to run", async || {
        let mut apps = apps_of(&prefix);
        apps.sort();
        let mut want: Vec<(String, String)> = newest
            .iter()
            .filter(|(n, _)| !closed.contains(n))
            .map(|(_, (b, s))| (b.clone(), s.to_string()))
            .collect();
        want.sort();
        let mut have: Vec<(String, String)> = apps
            .iter()
            .map(|(_, b, s)| (b.clone(), s.clone()))
            .collect();
        have.sort();
        // And nothing else of a sandbox: every process naming a checkout (bwrap's `--chdir`)
        // names one of the open PRs' live checkouts, at most bwrap's two per checkout.
        let envs = data.join("envs");
        let mut per_dir = std::collections::BTreeMap::<String, usize>::new();
        for (_, cmd) in processes_with(&envs.to_string_lossy()) {
            let dir = cmd
                .split(" --chdir ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or(&cmd)
                .to_owned();
            *per_dir.entry(dir).or_default() += 1;
        }
        let sandboxes_ok = per_dir.len() == want.len()
            && per_dir
                .iter()
                .all(|(dir, n)| *n <= 2 && Path::new(dir).is_dir());
        if have != want || !sandboxes_ok {
            eprintln!("apps now: {apps:?}; sandboxes: {per_dir:?}");
        }
        (have == want && sandboxes_ok).then_some(())
    })
    .await;
    servers.last_mut().unwrap().terminate().await;

    // Nothing lost: every delivery was processed.
    read_store(&data, |s| {
        for (id, ..) in &deliveries {
            let rec = record(s, id);
            assert!(
                matches!(
                    rec.status,
                    DeliveryStatus::Processed | DeliveryStatus::Ignored { .. }
                ),
                "{id}: {:?}",
                rec.status
            );
        }
    });
    // Nothing duplicated: one deployment per attempt.
    let mut keys = std::collections::BTreeSet::new();
    for d in fake.all_deployments(&repo) {
        let key = DeploymentPayload::from_json(&d.payload).expect("every deployment has a key");
        assert!(
            keys.insert((key.environment.clone(), key.attempt)),
            "two deployments for one attempt: {key:?}"
        );
    }
}

/// What the tests of the real binary start from: a temp dir for its data and log, a fake GitHub
/// with `acme/webapp` installed, and a git repository whose `main` holds `files` (mirrored
/// into the fake at `main` and at its commit).
struct BinWorld {
    dir: TempDir,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    repo: RepoName,
    fake: FakeGitHub,
    git: GitRepo,
    files: Vec<(&'static str, String)>,
}

impl BinWorld {
    async fn new(files: Vec<(&'static str, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("serve.log");
        let repo = RepoName::new("acme", "webapp").unwrap();
        let fake = FakeGitHub::start().await;
        fake.add_installation(INSTALLATION, repo.owner());
        fake.add_repo(&repo, "main", INSTALLATION);
        let (git, main_sha) = GitRepo::init(&dir.path().join("src"), &files).unwrap();
        for (path, content) in &files {
            fake.set_file(&repo, "main", path, content);
            fake.set_file(&repo, main_sha.as_str(), path, content);
        }
        Self {
            dir,
            data,
            log,
            repo,
            fake,
            git,
            files,
        }
    }
}
