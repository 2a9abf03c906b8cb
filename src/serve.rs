//! Running the app: the public listener, the admin socket, the worker and the periodic
//! reconcile/sweep loop, all stopped together on shutdown.

use std::path::Path;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::app::App;
use crate::worker::tokio_util_lite::{Shutdown, Trigger, shutdown};

/// How often the reconciler and sweeper run.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    pub reconcile: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            reconcile: Duration::from_secs(60),
        }
    }
}

/// The admin socket's path in a data dir.
pub fn admin_socket(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("admin.sock")
}

/// A running server: the public listener, the admin socket, the worker and the periodic loop.
pub struct Server {
    trigger: Trigger,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Ask everything to stop (graceful: in-flight requests finish).
    pub fn stop(&self) {
        self.trigger.fire();
    }

    /// Wait until everything has stopped.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Reconcile (so environments that were live before a restart come back and lost webhooks are
/// made up for), then start serving. Returns once everything is started.
pub async fn start(app: App, listener: TcpListener, intervals: Intervals) -> Server {
    let (trigger, signal) = shutdown();
    match app.reconcile().await {
        Ok(s) => tracing::info!(?s, "reconciled at start-up"),
        Err(e) => tracing::error!(error = %e, "reconcile at start-up failed"),
    }
    let worker = tokio::spawn(app.clone().run_worker(signal.clone()));
    let ticker = tokio::spawn(periodic(app.clone(), intervals, signal.clone()));
    let sock = admin_socket(&app.settings().data_dir);
    let _ = std::fs::remove_file(&sock);
    let admin = match UnixListener::bind(&sock) {
        Ok(l) => {
            let router = crate::server::admin_router(app.clone());
            let s = signal.clone();
            Some(tokio::spawn(async move {
                let _ = axum::serve(l, router)
                    .with_graceful_shutdown(async move { s.wait().await })
                    .await;
            }))
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %sock.display(), "admin socket unavailable");
            None
        }
    };
    let router = crate::server::router(app.clone());
    tracing::info!(addr = ?listener.local_addr().ok(), "listening");
    let task = tokio::spawn(async move {
        let s = signal.clone();
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { s.wait().await })
            .await;
        let _ = worker.await;
        let _ = ticker.await;
        if let Some(a) = admin {
            let _ = a.await;
        }
        let _ = std::fs::remove_file(&sock);
        let _ = app.store().flush().await;
        result
    });
    Server { trigger, task }
}

/// Serve until `stop` resolves.
pub async fn run(
    app: App,
    listener: TcpListener,
    intervals: Intervals,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = start(app, listener, intervals).await;
    stop.await;
    server.stop();
    server.wait().await
}

async fn periodic(app: App, intervals: Intervals, signal: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(intervals.reconcile) => {}
            _ = signal.wait() => return,
        }
        if let Err(e) = app.reconcile().await {
            tracing::warn!(error = %e, "reconcile failed");
        }
        if let Err(e) = app.sweep().await {
            tracing::warn!(error = %e, "sweep failed");
        }
        let retention = chrono::Duration::from_std(app.settings().delivery_retention)
            .unwrap_or(chrono::Duration::days(7));
        if let Err(e) = app.store().prune_deliveries(app.now() - retention) {
            tracing::warn!(error = %e, "pruning deliveries failed");
        }
    }
}
