//! The public HTTP server's accept loop (`serve_http`): hyper-util, HTTP/1.1 with a header read
//! timeout, the peer address, a connection limit answered `503`, a graceful drain. The full
//! server (src/serve.rs) and setup mode (src/setup.rs) both run it; a leaf that imports neither.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::shutdown::Shutdown;

/// Serve `router` alone on `listener` until `stop` fires, behind the same front door as the
/// full server (header read timeout, connection limit, graceful end): setup mode (src/setup.rs).
pub async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    max_connections: usize,
    stop: Shutdown,
) -> std::io::Result<()> {
    serve_http(listener, router, HEADER_READ_TIMEOUT, max_connections, stop).await
}

/// The default `serve::Intervals::header_read_timeout`.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish on shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections refused at once (each gets its short 503 from a small task); beyond this many,
/// a surplus connection is closed without a word.
const MAX_REFUSING: usize = 64;
/// How long a refused connection is given to take its 503 before it is closed.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer of a connection over the limit (the request is not read).
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 55\r\n\r\n\
stagebot: too many open connections; retry in a moment\n";

/// Answer a connection over the limit with [`REFUSAL`] and close it, reading (and dropping)
/// what the client sends meanwhile so the close does not reset the answer away.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// The public HTTP server: HTTP/1.1 with a header read timeout (axum's `serve` has none),
/// the peer address as `ConnectInfo` (for `X-Forwarded-For`), graceful shutdown, and at most
/// `max_connections` connections open at once (streams and upgraded connections included);
/// a connection beyond that is accepted, answered `503` with `Retry-After: 1` and closed.
pub(crate) async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    header_read_timeout: Duration,
    max_connections: usize,
    signal: Shutdown,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let graceful = GracefulShutdown::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let refusing = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            // The signal first: once it has fired, no further connection is accepted (setup
            // mode hands its queued connections to the full server this way).
            biased;
            _ = signal.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, max_connections, "connection limit reached; answered 503");
            if let Ok(permit) = std::sync::Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        // Every request carries the slot: a WebSocket tunnel keeps it after the connection
        // is handed over, so it counts until the tunnel closes.
        let slot = crate::proxy::ConnectionSlot::new(slot);
        let request_slot = slot.clone();
        let service =
            router
                .clone()
                .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req.extensions_mut().insert(request_slot.clone());
                    req
                });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time");
    }
    Ok(())
}
