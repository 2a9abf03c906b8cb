//! Catch-up from GitHub's webhook delivery log (docs/reliability.md, "Every delivery GitHub
//! recorded is eventually processed").
//!
//! GitHub does not retry a webhook that failed: it records the failure in the App's delivery
//! log. Each pass reads that log newest first (`GET /app/hook/deliveries`, App JWT) down to the
//! newest entry the previous pass read (the cursor) or the horizon, whichever comes first, and
//! asks GitHub to redeliver (`POST /app/hook/deliveries/{id}/attempts`), oldest first and at most
//! [`REDELIVERIES_PER_PASS`] per pass, every delivery that:
//!
//! - is not a `ping`;
//! - was never answered 4xx (a bad signature or a body too large stays refused);
//! - is absent from the store: GitHub recorded it as failed (5xx, timeout, no connection), or
//!   as delivered to a store that has since lost it;
//! - was made after the horizon: when this store was created, recovered or restored (so nothing
//!   from before is replayed: a three-day-old `/rollback production` never runs again), and
//!   within `STAGEBOT_DELIVERY_RETENTION`.
//!
//! A redelivery keeps its GUID (`X-GitHub-Delivery`), so the webhook's duplicate check keeps it
//! exactly-once; the store marks it `recovered` when it arrives and counts it
//! (`stagebot_deliveries_recovered_total`). Deliveries found missing wait in a persisted backlog
//! until requested; a delivery is requested at most [`MAX_REQUESTS`] times.

use chrono::Utc;
use serde::Serialize;

use crate::app::App;
use crate::github::{GitHubError, HookDelivery};
use crate::store::{CatchupEntry, CatchupRequest, StoreError};
use crate::types::DeliveryId;

/// At most this many redeliveries are requested per pass (the rest wait for the next one).
pub const REDELIVERIES_PER_PASS: usize = 20;
/// A delivery whose redelivery was requested this often and never arrived is given up on.
pub const MAX_REQUESTS: u32 = 3;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CatchupSummary {
    /// Pages of the delivery log read.
    pub pages: usize,
    /// Log entries read that were new to the catch-up.
    pub read: usize,
    /// Deliveries newly found missing (added to the backlog).
    pub missing: usize,
    /// Redeliveries requested.
    pub requested: usize,
    /// Deliveries still waiting in the backlog.
    pub backlog: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("GitHub: {0}")]
    GitHub(#[from] GitHubError),
}

/// Why a log entry is not requested, or `None` when it should be (before the store check).
fn refusal(d: &HookDelivery) -> Option<&'static str> {
    if d.event == "ping" {
        Some("ping")
    } else if (400..500).contains(&d.status_code) {
        Some("answered 4xx")
    } else {
        None
    }
}

impl App {
    /// One catch-up pass (see the module docs).
    pub async fn catch_up(&self) -> Result<CatchupSummary, CatchupError> {
        let store = self.store();
        let mut state = store.catchup()?;
        // GitHub's clock, not the app's (which tests may move): `delivered_at` is GitHub's.
        let now = Utc::now();
        let retention = chrono::Duration::from_std(self.settings().delivery_retention)
            .unwrap_or(chrono::Duration::days(7));
        // GitHub gives `delivered_at` in whole seconds (cut, not rounded): a delivery in the
        // horizon's own second counts as older, so nothing from before the horizon is replayed.
        let floor = state.horizon.max(now - retention);
        let cursor = state.cursor;
        let mut summary = CatchupSummary::default();
        let mut newest = cursor;
        let mut entries: Vec<HookDelivery> = Vec::new();
        self.github()
            .visit_hook_deliveries(|page| {
                summary.pages += 1;
                for d in page {
                    if cursor.is_some_and(|c| d.id <= c) || d.delivered_at < floor {
                        return true;
                    }
                    newest = Some(newest.map_or(d.id, |n| n.max(d.id)));
                    entries.push(d);
                }
                false
            })
            .await?;
        summary.read = entries.len();

        // Oldest first; one decision per GUID over all its attempts.
        entries.reverse();
        let refused: std::collections::HashSet<String> = entries
            .iter()
            .filter(|d| refusal(d).is_some())
            .map(|d| d.guid.clone())
            .collect();
        for d in &entries {
            if refused.contains(&d.guid) || state.backlog.iter().any(|e| e.guid.as_str() == d.guid)
            {
                continue;
            }
            let Ok(guid) = DeliveryId::new(&d.guid) else {
                tracing::warn!(guid = %d.guid, "delivery log: malformed GUID, skipped");
                continue;
            };
            if store.delivery(&guid)?.is_some() {
                continue;
            }
            if let Some(req) = store.catchup_requests(&guid)?
                && req.requests >= MAX_REQUESTS
            {
                tracing::warn!(%guid, event = %d.event, requests = req.requests,
                    "delivery still missing after its redeliveries; giving up on it");
                continue;
            }
            tracing::info!(%guid, event = %d.event, action = ?d.action, status_code = d.status_code,
                delivered_at = %d.delivered_at, "delivery missing; will ask GitHub to redeliver it");
            state.backlog.push(CatchupEntry {
                hook_delivery_id: d.id,
                guid,
                event: d.event.clone(),
                action: d.action.clone(),
                delivered_at: d.delivered_at,
                status_code: d.status_code,
            });
            summary.missing += 1;
        }
        state
            .backlog
            .sort_by_key(|e| (e.delivered_at, e.hook_delivery_id));
        state.cursor = newest;
        store.put_catchup(&state)?;
        store.flush().await?;

        let result = self.request_redeliveries(&mut state, &mut summary).await;
        store.put_catchup(&state)?;
        store.flush().await?;
        store.prune_catchup_requests(now - retention)?;
        summary.backlog = state.backlog.len();
        result.map(|()| summary)
    }

    /// Request the oldest of the backlog, up to the per-pass bound. A retryable GitHub error
    /// stops the pass (what is left waits for the next); a refusal drops that delivery.
    async fn request_redeliveries(
        &self,
        state: &mut crate::store::CatchupState,
        summary: &mut CatchupSummary,
    ) -> Result<(), CatchupError> {
        let store = self.store();
        let mut done = 0;
        while done < REDELIVERIES_PER_PASS && !state.backlog.is_empty() {
            let entry = state.backlog[0].clone();
            if store.delivery(&entry.guid)?.is_some() {
                state.backlog.remove(0);
                continue;
            }
            done += 1;
            // The intent first: the redelivery can arrive before GitHub's 202 does.
            let previous = store.catchup_requests(&entry.guid)?;
            store
                .put_catchup_request(
                    &entry.guid,
                    &CatchupRequest {
                        requests: previous.as_ref().map_or(0, |r| r.requests) + 1,
                        last_at: Utc::now(),
                    },
                )
                .await?;
            match self.github().redeliver(entry.hook_delivery_id).await {
                Ok(()) => {
                    tracing::info!(guid = %entry.guid, event = %entry.event, "redelivery requested");
                    summary.requested += 1;
                    state.backlog.remove(0);
                }
                Err(e) => {
                    store.restore_catchup_request(&entry.guid, previous.as_ref())?;
                    if e.is_retryable() {
                        return Err(e.into());
                    }
                    tracing::warn!(guid = %entry.guid, error = %e,
                        "GitHub refused the redelivery; giving up on it");
                    state.backlog.remove(0);
                }
            }
        }
        Ok(())
    }
}
