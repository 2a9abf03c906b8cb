//! Drains the inbox (docs/architecture.md, "The parts and the flow"). A delivery leaves the inbox only when its outcome is
//! recorded, so a crash at any point means it is processed again after restart. Failures are
//! retried with backoff, then kept as dead letters an operator can replay.

use std::time::Duration;

use tracing::Instrument;

use crate::app::App;
use crate::engine::Outcome;
use crate::metrics::Metrics;
use crate::store::{DeliveryStatus, StoreError};

impl App {
    /// Process every delivery that is ready now, in arrival order. Returns how many were
    /// attempted. Only one drain runs at a time.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let _guard = self.0.worker_lock.lock().await;
        let mut n = 0;
        while let Some(d) = self.store().next_ready(self.now())? {
            n += 1;
            let id = d.record.id.clone();
            let span = tracing::info_span!(
                "delivery",
                delivery = %id,
                event = %d.record.event,
                repo = tracing::field::Empty
            );
            let result = self.handle_delivery(&d).instrument(span.clone()).await;
            let _e = span.enter();
            let now = self.now();
            match result {
                Ok(Outcome::Processed) => {
                    Metrics::inc(&self.metrics().deliveries_processed);
                    self.store()
                        .finish_delivery(&id, DeliveryStatus::Processed, now)?;
                    tracing::info!("processed");
                }
                Ok(Outcome::Ignored(reason)) => {
                    Metrics::inc(&self.metrics().deliveries_ignored);
                    tracing::info!(%reason, "ignored");
                    self.store()
                        .finish_delivery(&id, DeliveryStatus::Ignored { reason }, now)?;
                }
                Err(e) => {
                    Metrics::inc(&self.metrics().deliveries_failed);
                    let attempts = d.record.attempts + 1;
                    let schedule = &self.settings().delivery_retry;
                    let retry_at =
                        (e.is_retryable() && attempts < schedule.max_attempts).then(|| {
                            now + chrono::Duration::from_std(schedule.delay(attempts))
                                .unwrap_or(chrono::Duration::MAX)
                        });
                    if retry_at.is_none() {
                        Metrics::inc(&self.metrics().deliveries_dead);
                    }
                    tracing::warn!(error = %e, attempts, ?retry_at, "delivery failed");
                    self.store()
                        .fail_delivery(&id, &e.to_string(), retry_at, now)?;
                }
            }
        }
        Ok(n)
    }

    /// Process everything that can be processed now and wait for the resulting deploys and
    /// teardowns to finish. Deterministic: tests call this instead of sleeping.
    pub async fn settle(&self) -> Result<(), StoreError> {
        loop {
            self.drain().await?;
            self.runners_idle().await;
            if self.store().next_ready(self.now())?.is_none() && self.busy_runners() == 0 {
                return Ok(());
            }
        }
    }

    /// The worker loop: drain, then wait for a new delivery or the next retry.
    pub async fn run_worker(self, shutdown: crate::shutdown::Shutdown) {
        loop {
            if let Err(e) = self.drain().await {
                tracing::error!(error = %e, "worker could not read the inbox");
            }
            let wait = match self.store().next_retry_at() {
                Ok(Some(t)) => (t - self.now()).to_std().unwrap_or(Duration::ZERO),
                _ => Duration::from_secs(60),
            }
            .clamp(Duration::from_millis(50), Duration::from_secs(60));
            tokio::select! {
                _ = self.0.worker_wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}
