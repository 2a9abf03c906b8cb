//! Running the app: the public listener, the admin socket, the worker and the periodic
//! reconcile/sweep loop, all stopped together on shutdown.

use std::path::Path;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::app::App;
use crate::http_server::serve_http;
use crate::shutdown::{Shutdown, Trigger, shutdown};

pub use crate::http_server::{DRAIN_TIMEOUT, HEADER_READ_TIMEOUT, serve_router};
/// The default of `STAGEBOT_MAX_CONNECTIONS`.
pub use crate::settings::DEFAULT_MAX_CONNECTIONS;

/// Timing of the server's background work and connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// How often the reconciler and sweeper run.
    pub reconcile: Duration,
    /// A client that has not sent its request headers by then is disconnected (slowloris).
    pub header_read_timeout: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            reconcile: Duration::from_secs(60),
            header_read_timeout: HEADER_READ_TIMEOUT,
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
    startup: tokio::sync::watch::Receiver<bool>,
}

impl Server {
    /// Ask everything to stop (graceful: in-flight requests finish).
    pub fn stop(&self) {
        self.trigger.fire();
    }

    /// Wait until the start-up reconcile with GitHub is done (it runs in the background so a
    /// slow GitHub never delays accepting webhooks).
    pub async fn started(&self) {
        let mut rx = self.startup.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wait until everything has stopped.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Reconcile what needs no GitHub (unfinished deploys resume, live environments come back),
/// then start serving; the reconcile with GitHub (PRs closed while webhooks were lost, missed
/// reports) follows in the background. Returns once everything is started.
pub async fn start(app: App, listener: TcpListener, intervals: Intervals) -> Server {
    let (trigger, signal) = shutdown();
    crate::provider::process::set_log_max(
        &app.settings().data_dir.join("logs"),
        app.settings().log_max,
    );
    // Payload segments are deleted whole with the retention: their window follows it.
    app.store()
        .set_payload_retention(app.settings().delivery_retention);
    match app.adopt_processes().await {
        Ok(s) => tracing::info!(?s, "processes of the previous run adopted or stopped"),
        Err(e) => tracing::error!(error = %e, "adopting processes at start-up failed"),
    }
    match app.reconcile_local().await {
        Ok(s) => tracing::info!(?s, "reconciled at start-up"),
        Err(e) => tracing::error!(error = %e, "reconcile at start-up failed"),
    }
    let (startup_tx, startup) = tokio::sync::watch::channel(false);
    let remote = app.clone();
    tokio::spawn(async move {
        match remote.reconcile_github().await {
            Ok(s) => tracing::info!(?s, "reconciled with GitHub at start-up"),
            Err(e) => tracing::error!(error = %e, "reconcile with GitHub at start-up failed"),
        }
        // Deliveries GitHub made while stagebot was down (src/catchup.rs).
        match remote.catch_up().await {
            Ok(s) => tracing::info!(?s, "caught up with GitHub's delivery log at start-up"),
            Err(e) => tracing::warn!(error = %e, "catch-up at start-up failed"),
        }
        startup_tx.send_replace(true);
    });
    let worker = tokio::spawn(app.clone().run_worker(signal.clone()));
    let ticker = tokio::spawn(periodic(app.clone(), intervals, signal.clone()));
    let schedules = tokio::spawn(crate::services::run_schedules_loop(
        app.clone(),
        signal.clone(),
    ));
    let sock = admin_socket(&app.settings().data_dir);
    let _ = std::fs::remove_file(&sock);
    let admin = match UnixListener::bind(&sock).and_then(|l| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
        Ok(l)
    }) {
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
        let result = serve_http(
            listener,
            router,
            intervals.header_read_timeout,
            app.settings().max_connections,
            signal.clone(),
        )
        .await;
        let _ = worker.await;
        let _ = ticker.await;
        let _ = schedules.await;
        if let Some(a) = admin {
            let _ = a.await;
        }
        let _ = std::fs::remove_file(&sock);
        let _ = app.store().flush().await;
        result
    });
    Server {
        trigger,
        task,
        startup,
    }
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

/// A size: a whole number of bytes with an optional unit, `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB` or
/// `G`/`GB`/`GiB` (any case; every unit is binary: `1MB` is 1,048,576 bytes). `None` when it is
/// not one or overflows.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, unit) = s.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
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
        if let Err(e) = app.catch_up().await {
            tracing::warn!(error = %e, "catch-up with GitHub's delivery log failed");
        }
        if let Err(e) = app.engine().sweep().await {
            tracing::warn!(error = %e, "sweep failed");
        }
        match prune(&app) {
            Ok((done, dead)) if done + dead > 0 => {
                tracing::info!(finished = done, dead_letters = dead, "pruned deliveries");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning deliveries failed"),
        }
        match prune_disk(&app).await {
            Ok(p) if !p.is_empty() => tracing::info!(
                environments = p.environments,
                logs = p.logs,
                env_dirs = p.env_dirs,
                repo_caches = p.repo_caches,
                "pruned destroyed environments, logs and caches past the retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning the disk failed"),
        }
    }
}

/// Prune what is kept on disk past `STAGEBOT_DELIVERY_RETENTION` besides deliveries: archived
/// environments with their history, release logs, checkouts and git caches (`src/prune.rs`).
pub async fn prune_disk(app: &App) -> Result<crate::prune::DiskPruned, crate::store::StoreError> {
    let retention = chrono::Duration::from_std(app.settings().delivery_retention)
        .unwrap_or(chrono::Duration::days(7));
    crate::prune::prune_disk(app, app.now() - retention).await
}

/// Forget finished deliveries and dead letters older than `STAGEBOT_DELIVERY_RETENTION`, and
/// the oldest dead letters beyond `STAGEBOT_DEAD_LETTERS_MAX`. Returns how many of each went.
pub fn prune(app: &App) -> Result<(usize, usize), crate::store::StoreError> {
    let retention = chrono::Duration::from_std(app.settings().delivery_retention)
        .unwrap_or(chrono::Duration::days(7));
    let cutoff = app.now() - retention;
    let done = app.store().prune_deliveries(cutoff)?;
    let dead = app
        .store()
        .prune_dead_letters(cutoff, app.settings().dead_letters_max)?;
    Ok((done, dead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes(" 10 mb "), Some(10 << 20));
        assert_eq!(parse_bytes("512k"), Some(512 << 10));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("7B"), Some(7));
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("MiB"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("1.5MiB"), None);
        assert_eq!(parse_bytes("2TiB"), None);
        assert_eq!(parse_bytes("99999999999999999999G"), None);
        assert_eq!(parse_bytes("18446744073709551615G"), None);
    }
}
