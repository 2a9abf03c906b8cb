//! WebSockets and streaming through the built-in proxy, end to end: a real preview deployed by
//! the local provider (a Python app with a hand-written RFC 6455 handshake and framing, standard
//! library only), reached through stagebot's listener with the preview's `Host`.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use stagebot::environment::EnvState;
use stagebot::slug::preview_slug;
use stagebot::testkit::{GitRepo, Stack, StackOptions, TestPr};
use stagebot::types::{EnvId, Permission, PrNumber};
use tokio_tungstenite::tungstenite::{self, Message};

/// A WebSocket echo (`/ws`), a gated event stream (`/events?n=N&type=T`: event 1 at once, each
/// next one only after a `GET /next`), `/sent` (events written so far), `/closed` (WebSocket
/// connections the app has seen end) and `/upgrade` (the upgrade headers it received).
/// Standard library only.
const LIVE_APP: &str = r#"
import base64, hashlib, http.server, os, struct, threading, urllib.parse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
sha = os.environ["STAGEBOT_SHA"].encode()
gate = threading.Semaphore(0)
lock = threading.Lock()
counts = {"sent": 0, "closed": 0}

def read_exact(f, n):
    data = f.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data

def read_frame(f):
    b1, b2 = read_exact(f, 2)
    fin, opcode = b1 & 0x80, b1 & 0x0F
    masked, n = b2 & 0x80, b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(f, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(f, 8))[0]
    if not masked:
        raise ValueError("a client frame must be masked")
    key = read_exact(f, 4)
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(read_exact(f, n)))
    return fin, opcode, payload

def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def reply(self, body, status=200):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/healthz":
            self.reply(b"ok")
        elif url.path == "/ws":
            self.websocket()
        elif url.path == "/events":
            self.stream(int(query.get("n", "3")), query.get("type", "text/event-stream"))
        elif url.path == "/next":
            gate.release()
            self.reply(b"ok")
        elif url.path in ("/sent", "/closed"):
            with lock:
                self.reply(str(counts[url.path[1:]]).encode())
        elif url.path == "/upgrade":
            self.reply(" ".join(k + "=" + self.headers.get(k, "-") for k in ("Upgrade", "Connection", "HTTP2-Settings")).encode())
        else:
            self.reply(sha)

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            self.reply(b"not a websocket handshake", 400)
            return
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.close_connection = True
        message, first = b"", 1
        try:
            while True:
                fin, opcode, payload = read_frame(self.rfile)
                if opcode == 8:
                    self.wfile.write(frame(8, payload[:2]))
                    break
                if opcode == 9:
                    self.wfile.write(frame(10, payload))
                    continue
                if opcode == 10:
                    continue
                if opcode != 0:
                    first = opcode
                message += payload
                if fin:
                    self.wfile.write(frame(first, (b"echo: " if first == 1 else b"") + message))
                    message = b""
        except (EOFError, OSError, ValueError):
            pass
        finally:
            with lock:
                counts["closed"] += 1

    def stream(self, n, kind):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for i in range(1, n + 1):
                if i > 1 and not gate.acquire(timeout=60):
                    return
                data = ("id: %d\ndata: event %d\n\n" % (i, i)).encode()
                with lock:
                    counts["sent"] += 1
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A stack serving one live preview of [`LIVE_APP`].
struct Live {
    stack: Stack,
    /// The preview's host (`pr-7-…--webapp.localhost:<port>`).
    host: String,
    _dir: tempfile::TempDir,
}

impl Live {
    async fn start(tweak: impl FnOnce(&mut StackOptions)) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("app.py", LIVE_APP.to_owned()),
            (
                ".github/stagebot.yml",
                "start: exec python3 app.py\nhealth: /healthz\n".to_owned(),
            ),
        ];
        let (git, main_sha) = GitRepo::init(&dir.path().join("src"), &files).unwrap();
        let mut opts = StackOptions::new(&dir.path().join("data"));
        tweak(&mut opts);
        let stack = Stack::start(opts).await.unwrap();
        stack.mirror(&main_sha, &files);
        stack.mirror_ref("main", &files);
        stack.grant("alice", Permission::Write);
        let sha = git.commit("feature/live", &files, "live app").unwrap();
        stack.mirror(&sha, &files);
        let pr = TestPr::new(7, "feature/live", sha.clone(), &git.clone_url());
        stack.open_pr(&pr).await.unwrap();
        stack.settle().await.unwrap();
        let id = EnvId {
            repo: stack.repo.clone(),
            slug: preview_slug(Some(PrNumber(7)), "feature/live"),
        };
        let env = stack.app.store().env(&id).unwrap().expect("the preview");
        assert_eq!(env.state(), EnvState::Live, "{:?}", env.last_error);
        let sticky = stack.sticky(7).expect("the sticky comment");
        assert!(sticky.contains(&env.url), "{sticky}");
        assert_eq!(stack.get(&env.url).await.unwrap(), (200, sha.to_string()));
        let host = env
            .url
            .strip_prefix("http://")
            .expect("an http preview URL")
            .to_owned();
        Live {
            stack,
            host,
            _dir: dir,
        }
    }

    /// Open a WebSocket to the preview through stagebot's listener.
    async fn websocket(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
        tokio_tungstenite::tungstenite::Error,
    > {
        let tcp = tokio::net::TcpStream::connect(self.stack.addr).await?;
        let (ws, resp) =
            tokio_tungstenite::client_async(format!("ws://{}/ws", self.host), tcp).await?;
        assert_eq!(resp.status().as_u16(), 101);
        Ok(ws)
    }

    /// A client that sends the preview's host to stagebot, without an overall timeout (streams).
    fn http(&self) -> reqwest::Client {
        let name = self.host.split(':').next().unwrap_or_default();
        reqwest::Client::builder()
            .no_proxy()
            .resolve(name, self.stack.addr)
            .build()
            .unwrap()
    }

    /// GET a path of the preview through the proxy: the body as text.
    async fn text(&self, path: &str) -> String {
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            self.http()
                .get(format!("http://{}{path}", self.host))
                .send(),
        )
        .await
        .expect("an answer within 10 s")
        .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        resp.text().await.unwrap()
    }
}

/// The next message that is not a ping/pong, within a generous bound.
async fn next_message(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Option<Result<Message, tungstenite::Error>> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        match next {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return other,
        }
    }
}

/// The next chunk of a streamed body, within a generous bound.
async fn next_chunk(resp: &mut reqwest::Response, what: &str) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .unwrap_or_else(|_| panic!("{what} did not arrive within 10 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_through_the_proxy_and_counts_against_the_connection_limit() {
    let live = Live::start(|o| o.max_connections = Some(4)).await;

    let mut ws = live
        .websocket()
        .await
        .expect("the handshake through the proxy");
    for text in ["hello", "second message", "ünïcødé ✓"] {
        ws.send(Message::text(text)).await.unwrap();
        match next_message(&mut ws).await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), format!("echo: {text}")),
            other => panic!("expected the echo of {text:?}, got {other:?}"),
        }
    }
    // Many round trips in a row: every one answered, in order.
    let t = std::time::Instant::now();
    for i in 0..200 {
        ws.send(Message::text(format!("n{i}"))).await.unwrap();
        match next_message(&mut ws).await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), format!("echo: n{i}")),
            other => panic!("round trip {i}: {other:?}"),
        }
    }
    eprintln!(
        "measure: 200 WebSocket round trips through the proxy in {:?}",
        t.elapsed()
    );
    // Binary, and large enough for the 64-bit length form (the copy is bytes, not messages).
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next_message(&mut ws).await {
        Some(Ok(Message::Binary(b))) => assert!(b.as_ref() == big.as_slice(), "binary echo"),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    // Ping → the app's pong (through the tunnel).
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a pong within 10 s");
    assert!(
        matches!(&pong, Some(Ok(Message::Pong(p))) if p.as_ref() == b"are you there"),
        "{pong:?}"
    );
    assert_eq!(live.stack.app.proxy_client().open_tunnels(), 1);
    let (_, metrics) = live
        .stack
        .get(&format!("{}/metrics", live.stack.url()))
        .await
        .unwrap();
    assert!(
        metrics.contains("\nstagebot_proxy_websockets_open 1\n"),
        "{metrics}"
    );

    // A clean close: the app answers the close frame and sees its connection end.
    ws.close(None).await.unwrap();
    loop {
        match next_message(&mut ws).await {
            None | Some(Err(tungstenite::Error::ConnectionClosed)) => break,
            Some(Ok(Message::Close(_))) => continue,
            other => panic!("expected the close, got {other:?}"),
        }
    }
    // The server side has closed; the client lets go of its connection (as browsers do).
    drop(ws);
    wait_for("the app to see the socket closed", || async {
        live.text("/closed").await == "1"
    })
    .await;
    wait_for("the tunnel to be gone", || async {
        live.stack.app.proxy_client().open_tunnels() == 0
    })
    .await;

    // Another upgrade is not a protocol switch: the app gets a plain request, without the
    // hop-by-hop `Upgrade`, and answers it over HTTP/1.1.
    let resp = live
        .http()
        .get(format!("http://{}/upgrade", live.host))
        .header("connection", "upgrade, http2-settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        "Upgrade=- Connection=- HTTP2-Settings=-"
    );

    // Open tunnels count against STAGEBOT_MAX_CONNECTIONS (4), and may take at most half of
    // it: a further handshake is refused with 503.
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        match live.websocket().await {
            Ok(ws) => open.push(ws),
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 503);
                refused += 1;
                break;
            }
            Err(e) => panic!("expected a tunnel or a 503, got {e}"),
        }
    }
    assert_eq!(refused, 1, "opened {} tunnels, none refused", open.len());
    // Tunnels hold at most half of the slots (the rest stay for webhooks and pages).
    assert_eq!(open.len(), 2, "{} tunnels", open.len());
    assert_eq!(live.stack.app.proxy_client().open_tunnels(), open.len());
    // Each still echoes.
    for (i, ws) in open.iter_mut().enumerate() {
        ws.send(Message::text(format!("tunnel {i}"))).await.unwrap();
        match next_message(ws).await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), format!("echo: tunnel {i}")),
            other => panic!("tunnel {i}: {other:?}"),
        }
    }
    // One closes: its slot is free again and a new tunnel opens.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    while next_message(&mut first).await.is_some_and(|m| m.is_ok()) {}
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        match live.websocket().await {
            Ok(ws) => {
                again = Some(ws);
                break;
            }
            Err(tungstenite::Error::Http(resp)) if resp.status().as_u16() == 503 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("expected a tunnel or a 503, got {e}"),
        }
    }
    let mut again = again.expect("a tunnel once one was closed");
    again.send(Message::text("again")).await.unwrap();
    assert!(matches!(
        next_message(&mut again).await,
        Some(Ok(Message::Text(t))) if t.as_str() == "echo: again"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_and_chunked_bodies_arrive_as_they_are_sent() {
    let live = Live::start(|_| {}).await;
    for (kind, n) in [("text/event-stream", 4), ("application/octet-stream", 3)] {
        let sent_before: usize = live.text("/sent").await.parse().unwrap();
        let mut resp = tokio::time::timeout(
            Duration::from_secs(10),
            live.http()
                .get(format!("http://{}/events?n={n}&type={kind}", live.host))
                .header("accept", kind)
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind}: no response within 10 s (a proxy that buffers?)"))
        .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["content-type"], kind);
        let mut received = String::new();
        for i in 1..=n {
            // Event i is all the app has sent: it sends i + 1 only after `/next`. Receiving it
            // now proves the proxy forwarded it without waiting for more.
            while !received.contains(&format!("data: event {i}\n\n")) {
                let chunk = next_chunk(&mut resp, &format!("{kind} event {i}"))
                    .await
                    .unwrap_or_else(|| panic!("{kind}: the stream ended before event {i}"));
                received.push_str(&chunk);
            }
            let sent: usize = live.text("/sent").await.parse().unwrap();
            assert_eq!(sent - sent_before, i, "{kind}: events the app had sent");
            if i < n {
                assert!(
                    !received.contains(&format!("event {}", i + 1)),
                    "{received}"
                );
                live.text("/next").await;
            }
        }
        assert_eq!(next_chunk(&mut resp, "the end").await, None, "{received}");
        let expected: String = (1..=n)
            .map(|i| format!("id: {i}\ndata: event {i}\n\n"))
            .collect();
        assert_eq!(received, expected, "{kind}: in order, nothing lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idleness_closes_streams_and_websockets() {
    const IDLE: Duration = Duration::from_secs(3);
    let live = Live::start(|o| o.proxy_idle_timeout = Some(IDLE)).await;

    // A stream that sends something every second lives longer than the idle timeout...
    let mut resp = live
        .http()
        .get(format!("http://{}/events?n=100", live.host))
        .send()
        .await
        .unwrap();
    let mut received = String::new();
    for i in 1..=6 {
        while !received.contains(&format!("data: event {i}\n\n")) {
            let chunk = next_chunk(&mut resp, &format!("event {i}"))
                .await
                .unwrap_or_else(|| panic!("the stream ended before event {i}: {received}"));
            received.push_str(&chunk);
        }
        tokio::time::sleep(IDLE / 3).await;
        live.text("/next").await;
    }
    assert!(received.contains("data: event 6"), "{received}");
    // ...and is cut once it falls silent (event 7 is sent; nothing after it).
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => received.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) => return "ended",
                Err(_) => return "cut",
            }
        }
    })
    .await
    .expect("the silent stream to be closed within 30 s");
    assert_eq!(
        cut, "cut",
        "a cut stream must not look complete: {received}"
    );
    assert!(received.ends_with("data: event 7\n\n"), "{received}");

    // A WebSocket in use lives longer than the idle timeout...
    let mut ws = live.websocket().await.unwrap();
    for i in 0..5 {
        ws.send(Message::text(format!("keepalive {i}")))
            .await
            .unwrap();
        assert!(matches!(
            next_message(&mut ws).await,
            Some(Ok(Message::Text(t))) if t.as_str() == format!("echo: keepalive {i}")
        ));
        tokio::time::sleep(IDLE / 3).await;
    }
    assert_eq!(live.stack.app.proxy_client().open_tunnels(), 1);
    assert_eq!(live.text("/closed").await, "0");
    // ...and a silent one is closed on both sides.
    let end = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("the idle WebSocket to be closed within 30 s");
    assert!(
        matches!(
            end,
            None | Some(Err(tungstenite::Error::Protocol(_)
                | tungstenite::Error::Io(_)
                | tungstenite::Error::ConnectionClosed))
        ),
        "{end:?}"
    );
    wait_for("the app to see the idle socket closed", || async {
        live.text("/closed").await == "1"
    })
    .await;
    assert_eq!(live.stack.app.proxy_client().open_tunnels(), 0);
}

/// Poll `cond` (a bounded number of times) until it holds.
async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
