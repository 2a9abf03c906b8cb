//! The built-in reverse proxy (docs/providers.md, local provider): requests whose `Host` names a live
//! environment are forwarded to that environment's process; everything else is left to
//! stagebot's own routes.
//!
//! Wiring (done by the server): `axum::middleware::from_fn_with_state(proxy_state, proxy::middleware)`
//! in front of the app's router, or call [`forward`] yourself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The routing table: host (lowercase, with its port when it has one) → upstream address.
/// Cheap to clone; every clone shares the same table.
#[derive(Clone, Default)]
pub struct Routes {
    inner: Arc<RwLock<HashMap<String, SocketAddr>>>,
    /// The last request the proxy forwarded per route (its configured host): kept in memory,
    /// read by the sweeper, so a visit costs a map insert, never a store write.
    visits: Arc<std::sync::Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.list()).finish()
    }
}

impl Routes {
    /// Route `host` (e.g. `pr-42-login--webapp.localhost:3000`) to `addr`, replacing any route.
    pub fn set(&self, host: &str, addr: SocketAddr) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(host.to_ascii_lowercase(), addr);
    }

    /// Remove the route for `host`; returns where it pointed.
    pub fn remove(&self, host: &str) -> Option<SocketAddr> {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(&host.to_ascii_lowercase())
    }

    /// Where a request for `host` goes. Matches the configured host exactly (case-insensitive);
    /// failing that, compares hosts with any `:port` removed from both sides, so a request that
    /// arrives through a front proxy on the default port (`Host: x.example.dev`) still finds
    /// `x.example.dev:3000`, and the reverse.
    pub fn get(&self, host: &str) -> Option<SocketAddr> {
        self.find(host).map(|(_, addr)| addr)
    }

    /// The configured host a request for `host` is routed under, and where it goes.
    fn find(&self, host: &str) -> Option<(String, SocketAddr)> {
        let host = host.to_ascii_lowercase();
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(addr) = map.get(&host) {
            return Some((host, *addr));
        }
        let bare = strip_port(&host);
        if let Some(addr) = map.get(bare) {
            return Some((bare.to_owned(), *addr));
        }
        map.iter()
            .find(|(k, _)| strip_port(k) == bare)
            .map(|(k, addr)| (k.clone(), *addr))
    }

    /// Note a request forwarded for `host` at `at` (the route's last visit).
    pub fn visit(&self, host: &str, at: chrono::DateTime<chrono::Utc>) {
        if let Some((key, _)) = self.find(host) {
            let mut visits = self.visits.lock().unwrap_or_else(PoisonError::into_inner);
            let last = visits.entry(key).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// When the route of the configured `host` last forwarded a request (since this start).
    pub fn last_visit(&self, host: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let visits = self.visits.lock().unwrap_or_else(PoisonError::into_inner);
        visits.get(&host.to_ascii_lowercase()).copied()
    }

    /// Every route, sorted by host.
    pub fn list(&self) -> Vec<(String, SocketAddr)> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }
}

/// `host:port` → `host`; `[::1]:80` → `[::1]`; leaves a bare host alone.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i + 1..].is_empty() && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            let h = &host[..i];
            // A bare IPv6 address (`::1`) has colons but no brackets: leave it alone.
            if h.contains(':') && !h.ends_with(']') {
                host
            } else {
                h
            }
        }
        _ => host,
    }
}

/// Does `host` look like a preview host under `domain`, i.e. one DNS label containing the `--`
/// separator directly under the domain (`pr-1-x--webapp.localhost:3000` under `localhost:3000`)?
/// Ports are ignored on both sides. Such a host with no route gets a 404 "no live environment".
pub fn is_preview_host(host: &str, domain: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let domain = domain.to_ascii_lowercase();
    let (host, domain) = (
        strip_port(&host),
        strip_port(domain.trim_start_matches('.')),
    );
    let Some(label) = host
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return false;
    };
    !label.is_empty() && !label.contains('.') && label.contains("--")
}

/// An environment that does not accept the connection by then gets a `502`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An environment that has not sent its response headers by then gets a `504`.
pub const RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// A request or response body (either direction) that moves no byte for this long is cut off;
/// a stream (server-sent events, long polling) stays open as long as it sends something. The
/// same idle timeout closes a WebSocket tunnel in which no byte moved either way. The default
/// of `STAGEBOT_PROXY_IDLE_TIMEOUT`.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A body that fails when no frame has come for `idle`.
struct IdleTimeout<B> {
    body: B,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> IdleTimeout<B> {
    fn new(body: B, idle: Duration) -> Self {
        Self {
            body,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> hyper::body::Body for IdleTimeout<B>
where
    B: hyper::body::Body<Data = axum::body::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data for {} ms", this.idle.as_millis()),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The HTTP client the proxy forwards with (plain HTTP/1 to local upstreams, pooled).
#[derive(Clone, Debug)]
pub struct ProxyClient {
    client: Client<HttpConnector, Body>,
    response_header_timeout: Duration,
    body_idle_timeout: Duration,
    /// WebSocket tunnels open now (shared by every clone).
    tunnels: Arc<std::sync::atomic::AtomicUsize>,
    /// At most this many tunnels at once ([`ProxyClient::with_max_tunnels`]).
    max_tunnels: usize,
}

impl Default for ProxyClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyClient {
    /// A client with a [`CONNECT_TIMEOUT`] and no overall timeout (responses may stream; see
    /// [`RESPONSE_HEADER_TIMEOUT`] and [`BODY_IDLE_TIMEOUT`]).
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            response_header_timeout: RESPONSE_HEADER_TIMEOUT,
            body_idle_timeout: BODY_IDLE_TIMEOUT,
            tunnels: Arc::default(),
            max_tunnels: usize::MAX,
        }
    }

    /// The same client with other response header and idle timeouts (`body_idle` applies to
    /// bodies and to WebSocket tunnels alike).
    pub fn with_timeouts(response_header: Duration, body_idle: Duration) -> Self {
        Self {
            response_header_timeout: response_header,
            body_idle_timeout: body_idle,
            ..Self::new()
        }
    }

    /// Refuse a WebSocket handshake (503) while `max` tunnels are open. The server sets half
    /// of `STAGEBOT_MAX_CONNECTIONS`: long-lived tunnels of one visitor cannot take every
    /// connection slot and lock out webhooks and the dashboard.
    pub fn with_max_tunnels(mut self, max: usize) -> Self {
        self.max_tunnels = max.max(1);
        self
    }

    /// WebSocket tunnels open now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Held by every request of a client connection that counts against the server's connection
/// limit (`STAGEBOT_MAX_CONNECTIONS`; put into the request's extensions by the server). The
/// slot is free once the connection and every clone are gone: a WebSocket tunnel keeps its
/// clone, so an upgraded connection keeps counting after the HTTP connection hands it over.
#[derive(Clone)]
pub struct ConnectionSlot {
    _held: Arc<dyn std::any::Any + Send + Sync>,
}

impl ConnectionSlot {
    /// A slot that holds `permit` until the last clone is dropped.
    pub fn new(permit: impl std::any::Any + Send + Sync) -> Self {
        Self {
            _held: Arc::new(permit),
        }
    }
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

/// Everything [`middleware`] needs.
#[derive(Clone, Debug)]
pub struct ProxyState {
    /// The routing table the local provider updates.
    pub routes: Routes,
    /// The forwarding client.
    pub client: ProxyClient,
    /// The preview domain (`STAGEBOT_PREVIEW_DOMAIN`, e.g. `localhost:3000`), for the 404 of
    /// unrouted preview hosts.
    pub preview_domain: String,
}

/// Axum middleware: routed hosts are proxied, unrouted preview hosts get a 404, everything else
/// reaches stagebot's own routes. Use with `axum::middleware::from_fn_with_state`.
pub async fn middleware(State(state): State<ProxyState>, req: Request, next: Next) -> Response {
    match forward(&state.routes, &state.client, req).await {
        Ok(resp) => resp,
        Err(req) => {
            let host = request_host(&req).unwrap_or_default();
            if is_preview_host(&host, &state.preview_domain) {
                no_live_environment(&host)
            } else {
                next.run(req).await
            }
        }
    }
}

/// The 404 for a preview-looking host with no route.
pub fn no_live_environment(host: &str) -> Response {
    text_response(
        StatusCode::NOT_FOUND,
        format!(
            "stagebot: no live environment at this address ({host}). It may have been torn down, \
             or its first deploy has not finished yet.\n"
        ),
    )
}

/// Forward `req` if its host is routed. Returns the upstream's response (or a 502 explaining
/// that the environment is not answering); gives the request back untouched when the host has
/// no route, so the caller can serve it.
///
/// Method, path, query, headers and body are passed on (bodies stream both ways, frame by
/// frame, never collected); hop-by-hop headers are removed; `X-Forwarded-For` (appended to),
/// `X-Forwarded-Host` and `X-Forwarded-Proto` (kept if a front proxy set it, else `http`) are
/// added.
///
/// A WebSocket handshake (`GET` with `Upgrade: websocket` and `Connection: upgrade`) keeps its
/// `Upgrade` and `Connection: upgrade`; when the environment answers `101`, both connections
/// are taken over and bytes are copied both ways until either side closes or nothing moves for
/// the idle timeout (see [`ProxyClient::with_timeouts`]). Any other `Upgrade` (`h2c`, …) is
/// dropped like every hop-by-hop header, so the request is answered over HTTP/1.1 as RFC 9110
/// allows.
pub async fn forward(
    routes: &Routes,
    client: &ProxyClient,
    req: Request,
) -> Result<Response, Request> {
    let Some(host) = request_host(&req) else {
        return Err(req);
    };
    let Some(upstream) = routes.get(&host) else {
        return Err(req);
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());

    let (mut parts, body) = req.into_parts();
    let websocket = is_websocket_handshake(&parts.method, &parts.headers);
    if websocket && client.open_tunnels() >= client.max_tunnels {
        tracing::warn!(%host, max = client.max_tunnels, "WebSocket refused: tunnels at their limit");
        let mut resp = text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "stagebot: too many WebSocket connections are open; retry in a moment.\n".to_owned(),
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        return Ok(resp);
    }
    // The client side of a WebSocket: its connection, once the response is `101`.
    let client_side = if websocket {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let slot = parts.extensions.get::<ConnectionSlot>().cloned();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let uri = match Uri::builder()
        .scheme("http")
        .authority(upstream.to_string())
        .path_and_query(path_and_query)
        .build()
    {
        Ok(uri) => uri,
        Err(e) => {
            return Ok(text_response(
                StatusCode::BAD_REQUEST,
                format!("stagebot: bad request URI: {e}\n"),
            ));
        }
    };
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let (true, Some(upgrade)) = (websocket, upgrade) {
        keep_upgrade(&mut parts.headers, upgrade);
    }
    add_forwarded(&mut parts.headers, &host, peer);

    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let upstream_req = Request::from_parts(
        parts,
        Body::new(IdleTimeout::new(body, client.body_idle_timeout)),
    );
    let answered = tokio::time::timeout(
        client.response_header_timeout,
        client.client.request(upstream_req),
    )
    .await;
    match answered {
        Err(_) => {
            tracing::warn!(%host, %upstream, %method, %path, "upstream sent no response headers in time");
            Ok(text_response(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "stagebot: the environment at {host} did not answer within {} s.\n",
                    client.response_header_timeout.as_secs()
                ),
            ))
        }
        Ok(Ok(mut resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let Some(client_side) = client_side else {
                tracing::warn!(%host, %upstream, %method, %path, "upstream switched protocols unasked");
                return Ok(text_response(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "stagebot: the environment at {host} switched protocols (101) on a \
                         request that was not a WebSocket handshake.\n"
                    ),
                ));
            };
            let app_side = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            let upgrade = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(upgrade) = upgrade {
                keep_upgrade(&mut parts.headers, upgrade);
            }
            let tunnel = Tunnel {
                idle: client.body_idle_timeout,
                open: TunnelCount::enter(&client.tunnels),
                _slot: slot,
            };
            let span = tracing::info_span!("websocket", %host, %upstream, %path);
            tokio::spawn(tracing::Instrument::instrument(
                tunnel.run(client_side, app_side),
                span,
            ));
            Ok(Response::from_parts(parts, Body::empty()))
        }
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                Body::new(IdleTimeout::new(body, client.body_idle_timeout)),
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(%host, %upstream, %method, %path, error = %error_chain(&e), "upstream not answering");
            Ok(text_response(
                StatusCode::BAD_GATEWAY,
                format!(
                    "stagebot: the environment at {host} is not answering ({}). \
                     It may be restarting or have crashed; see its deploy log.\n",
                    error_chain(&e)
                ),
            ))
        }
    }
}

/// The request's host: the `Host` header, or the authority of an absolute-form URI.
pub(crate) fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named by `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// A WebSocket opening handshake: `GET`, `Upgrade` naming `websocket`, `Connection` naming
/// `upgrade` (RFC 6455 §4.1; tokens compared case-insensitively).
fn is_websocket_handshake(method: &axum::http::Method, headers: &HeaderMap) -> bool {
    fn names(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                let t = t.trim();
                // `Upgrade: websocket/13` names a protocol with a version.
                t.eq_ignore_ascii_case(token)
                    || t.split('/')
                        .next()
                        .is_some_and(|p| p.eq_ignore_ascii_case(token))
            })
    }
    method == axum::http::Method::GET
        && names(headers, header::UPGRADE, "websocket")
        && names(headers, header::CONNECTION, "upgrade")
}

/// Put back what a protocol switch needs after the hop-by-hop headers went.
fn keep_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::UPGRADE, upgrade);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Counts an open tunnel while it lives.
struct TunnelCount(Arc<std::sync::atomic::AtomicUsize>);

impl TunnelCount {
    fn enter(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for TunnelCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An upgraded connection between a client and an environment.
struct Tunnel {
    idle: Duration,
    open: TunnelCount,
    /// The client connection's slot: the tunnel counts against the connection limit.
    _slot: Option<ConnectionSlot>,
}

impl Tunnel {
    /// Wait (at most `idle`) for both sides to switch, then copy bytes both ways until either
    /// side closes, an error, or `idle` without a byte in either direction. Dropping the
    /// connections closes them.
    async fn run(self, client: hyper::upgrade::OnUpgrade, app: hyper::upgrade::OnUpgrade) {
        use hyper_util::rt::TokioIo;
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let (client, app) =
            match tokio::time::timeout(self.idle, async { tokio::try_join!(client, app) }).await {
                Ok(Ok(both)) => both,
                Ok(Err(e)) => {
                    tracing::warn!(error = %error_chain(&e), "the protocol switch failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(idle_ms, "the protocol switch did not complete in time");
                    return;
                }
            };
        let activity = Activity::new();
        let mut client = Watched::new(TokioIo::new(client), Arc::clone(&activity));
        let mut app = Watched::new(TokioIo::new(app), Arc::clone(&activity));
        tracing::debug!("tunnel open");
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut app) => match copied {
                Ok((up, down)) => tracing::debug!(bytes_to_app = up, bytes_to_client = down, "tunnel closed"),
                Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
            },
            () = activity.idle_for(self.idle) => {
                tracing::info!(idle_ms, "tunnel closed: no data either way");
            }
        }
        drop(self.open);
    }
}

/// When a tunnel last moved a byte.
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds after `start`.
    last: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: tokio::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
            let deadline = self.start + Duration::from_millis(last) + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A connection whose reads note activity (every byte copied is read from one side first).
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

fn add_forwarded(headers: &mut HeaderMap, host: &str, peer: Option<std::net::IpAddr>) {
    if let Some(ip) = peer {
        let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", v);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

fn text_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_case_insensitively_with_and_without_port() {
        let r = Routes::default();
        let a: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        r.set("PR-1-X--web.localhost:3000", a);
        r.set("pr-2--web.example.dev", b);
        assert_eq!(r.get("pr-1-x--web.localhost:3000"), Some(a));
        assert_eq!(r.get("pr-1-x--web.LOCALHOST"), Some(a));
        assert_eq!(r.get("pr-2--web.example.dev:443"), Some(b));
        assert_eq!(r.get("pr-3--web.example.dev"), None);
        assert_eq!(r.list().len(), 2);
        assert_eq!(r.remove("pr-1-x--web.localhost:3000"), Some(a));
        assert_eq!(r.get("pr-1-x--web.localhost:3000"), None);
    }

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port("a.b:3000"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("a.b:"), "a.b:");
    }

    #[test]
    fn preview_hosts() {
        assert!(is_preview_host(
            "pr-1-x--web.localhost:3000",
            "localhost:3000"
        ));
        assert!(is_preview_host("PR-1-X--WEB.localhost", "localhost:3000"));
        assert!(is_preview_host("staging--web.example.dev", "example.dev"));
        assert!(!is_preview_host("localhost:3000", "localhost:3000"));
        assert!(!is_preview_host("web.localhost:3000", "localhost:3000"));
        assert!(!is_preview_host("a.b--c.localhost", "localhost"));
        assert!(!is_preview_host("x--y.evil-localhost", "localhost"));
        assert!(!is_preview_host("--", ""));
    }

    /// An upstream that takes connections, reads what comes, and answers each with `answer`
    /// (possibly nothing, possibly half a response), then never says more.
    async fn stalling_upstream(answer: &'static [u8]) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
                held.push(s);
            }
        });
        addr
    }

    fn request(host: &str) -> Request {
        Request::builder()
            .uri("/")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_silent_environment_gets_504_and_a_stalled_body_is_cut() {
        use http_body_util::BodyExt;
        let routes = Routes::default();
        let client =
            ProxyClient::with_timeouts(Duration::from_millis(300), Duration::from_millis(300));
        routes.set("silent--web.localhost", stalling_upstream(b"").await);
        let resp = forward(&routes, &client, request("silent--web.localhost"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);

        routes.set(
            "stalled--web.localhost",
            stalling_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await,
        );
        let resp = forward(&routes, &client, request("stalled--web.localhost"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let err = resp.into_body().collect().await.unwrap_err();
        assert!(format!("{err:?}").contains("no data for 300 ms"), "{err:?}");
    }

    #[test]
    fn websocket_handshakes_are_recognised() {
        use axum::http::Method;
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let ws = headers(&[("upgrade", "websocket"), ("connection", "Upgrade")]);
        assert!(is_websocket_handshake(&Method::GET, &ws));
        assert!(!is_websocket_handshake(&Method::POST, &ws));
        assert!(is_websocket_handshake(
            &Method::GET,
            &headers(&[
                ("upgrade", "WebSocket"),
                ("connection", "keep-alive, upgrade")
            ])
        ));
        assert!(is_websocket_handshake(
            &Method::GET,
            &headers(&[
                ("upgrade", "websocket/13"),
                ("connection", "keep-alive"),
                ("connection", "Upgrade")
            ])
        ));
        for not in [
            headers(&[
                ("upgrade", "h2c"),
                ("connection", "upgrade, http2-settings"),
            ]),
            headers(&[("upgrade", "websocket")]),
            headers(&[("connection", "upgrade")]),
            headers(&[("upgrade", "websockets"), ("connection", "upgrade")]),
            headers(&[("upgrade", "websocket"), ("connection", "upgrades")]),
        ] {
            assert!(!is_websocket_handshake(&Method::GET, &not), "{not:?}");
        }
    }

    #[test]
    fn a_handshake_keeps_its_upgrade_and_loses_other_hops() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, keep-alive, x-hop"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("sec-websocket-key", HeaderValue::from_static("abc"));
        let upgrade = h.get(header::UPGRADE).cloned().unwrap();
        strip_hop_by_hop(&mut h);
        keep_upgrade(&mut h, upgrade);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h["sec-websocket-key"], "abc");
        assert!(!h.contains_key("x-hop"));
        assert_eq!(h.len(), 3);
    }

    #[tokio::test]
    async fn a_switch_nobody_asked_for_is_a_502() {
        let routes = Routes::default();
        let client = ProxyClient::new();
        routes.set(
            "rogue--web.localhost",
            stalling_upstream(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n").await,
        );
        let resp = forward(&routes, &client, request("rogue--web.localhost"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(client.open_tunnels(), 0);
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }
}
