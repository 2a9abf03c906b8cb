//! Drains the inbox (docs/architecture.md, "The parts and the flow"). A delivery leaves the inbox
//! only when its outcome is recorded, so a crash at any point means it is processed again after
//! restart. Failures are retried with backoff, then kept as dead letters an operator can replay.
//!
//! Deliveries of different repositories are processed concurrently (at most [`MAX_IN_FLIGHT`] at
//! once), so a repository whose GitHub calls are slow never delays another's. Within one
//! repository (its [`OrderKey`]) they are processed strictly in arrival order, one at a time. A
//! delivery waiting for a retry holds back the later deliveries of its repository for at most one
//! base retry interval after its failure; then they proceed and it is retried when its time comes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::app::{App, RetrySchedule};
pub use crate::dispatch::OrderKey;
use crate::engine::Outcome;
use crate::metrics::Metrics;
use crate::store::{DeliveryRecord, DeliveryStatus, PendingDelivery, StoreError};
use crate::types::DeliveryId;

/// How many deliveries are processed at the same time (each of a different [`OrderKey`]).
pub const MAX_IN_FLIGHT: usize = 8;

/// Outcomes recorded between two flushes of the worker at most (a drain flushes once when it
/// ends; a long one every this many outcomes).
pub const OUTCOMES_PER_FLUSH: usize = 256;

/// How long the running worker leaves its recorded outcomes to the next group commit of the
/// front door before it flushes them itself (docs/performance.md, round 3). During a burst the
/// front door flushes every few milliseconds and covers them; after it, one flush does.
pub const OUTCOMES_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Deliveries of one key handed to one task at most: the task processes them in arrival order
/// without going back to the dispatcher between them, so a backlog of one repository costs one
/// walk of the inbox per run, not per delivery (docs/performance.md §0).
pub const RUN_MAX: usize = 256;

/// The dispatcher walks the inbox at most this often (an arrival wakes it; a burst of arrivals
/// would otherwise walk a growing inbox once per delivery).
const WALK_INTERVAL: Duration = Duration::from_millis(20);

/// A run: deliveries of one key, in arrival order; the payload of the first may already be read.
type Run = Vec<(DeliveryRecord, Option<Vec<u8>>)>;

/// Where a delivery stands when the dispatcher looks at it.
enum Ready {
    Now,
    /// Waiting for its retry; later deliveries of its key are held until `hold_until`.
    Later {
        hold_until: DateTime<Utc>,
    },
}

impl App {
    /// Process every delivery that is ready now and wait until they are done (deliveries that
    /// become ready meanwhile, because an earlier one of their repository finished or because
    /// they arrived, are processed too). Returns how many were attempted. Only one dispatcher
    /// runs at a time.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let attempted = self.drain_pass().await?;
        self.flush_outcomes().await?;
        Ok(attempted)
    }

    /// [`App::drain`] without the final flush: the outcomes are left to the next group commit
    /// ([`App::outcomes_durable`]).
    async fn drain_pass(&self) -> Result<usize, StoreError> {
        let _guard = self.0.worker.lock.lock().await;
        let mut tasks = tokio::task::JoinSet::new();
        let mut attempted = 0;
        let mut last_walk: Option<tokio::time::Instant> = None;
        loop {
            if let Some(at) = last_walk {
                tokio::time::sleep_until(at + WALK_INTERVAL).await;
            }
            last_walk = Some(tokio::time::Instant::now());
            // Register interest before looking, so a completion or an arrival between the scan
            // and the wait is not missed.
            let done = self.0.worker.done.notified();
            let arrived = self.0.worker.wake.notified();
            tokio::pin!(done, arrived);
            done.as_mut().enable();
            arrived.as_mut().enable();

            for (run, key) in self.dispatchable()? {
                attempted += run.len();
                let app = self.clone();
                tasks.spawn(async move { app.process_run(run, key).await });
            }
            let mut finished = false;
            while let Some(joined) = tasks.try_join_next() {
                log_join(joined);
                finished = true;
            }
            if tasks.is_empty() {
                if finished {
                    // What just finished may have made later deliveries of its key ready:
                    // look again before calling the inbox drained.
                    continue;
                }
                self.note_outcomes();
                return Ok(attempted);
            }
            self.outcomes_midway().await?;
            tokio::select! {
                Some(joined) = tasks.join_next() => log_join(joined),
                _ = &mut done => {}
                _ = &mut arrived => {}
            }
        }
    }

    /// The front door read this delivery's key while checking its payload: the dispatcher uses
    /// it instead of reading the payload back (a delivery it has not seen when a walk begins,
    /// after a restart say, is read for its key as before).
    pub fn learn_order_key(&self, id: &DeliveryId, key: OrderKey) {
        self.0
            .worker
            .dispatch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys
            .insert(id.clone(), key);
    }

    /// Make the outcomes recorded so far durable with one group commit (none when a group
    /// commit since covered them).
    async fn flush_outcomes(&self) -> Result<(), StoreError> {
        let (n, covered) = {
            let mut dispatch = self
                .0
                .worker
                .dispatch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if dispatch.unflushed == 0 && dispatch.outcomes.is_none() {
                return Ok(());
            }
            let ticket = dispatch.outcomes.take();
            let n = std::mem::take(&mut dispatch.unflushed);
            // Outcomes noted before and since covered by another flush need none of their own.
            (
                n,
                n == 0 && ticket.is_some_and(|t| self.store().is_durable(t)),
            )
        };
        if covered {
            return Ok(());
        }
        tracing::debug!(outcomes = n, "flushing recorded outcomes");
        let flushed = self.store().flush().await;
        if flushed.is_err() {
            // Not durable: keep them owed, so the worker tries again when it is idle.
            let mut dispatch = self
                .0
                .worker
                .dispatch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            dispatch.unflushed += n.max(1);
        }
        flushed
    }

    /// In a long drain, every [`OUTCOMES_PER_FLUSH`] outcomes: a ticket for them, and a flush
    /// only when no group commit covered the previous ticket meanwhile (nothing else flushes:
    /// a backlog drained after a restart, say).
    async fn outcomes_midway(&self) -> Result<(), StoreError> {
        let uncovered = {
            let dispatch = self
                .0
                .worker
                .dispatch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if dispatch.unflushed < OUTCOMES_PER_FLUSH {
                return Ok(());
            }
            dispatch
                .outcomes
                .is_some_and(|t| !self.store().is_durable(t))
        };
        if uncovered {
            self.flush_outcomes().await
        } else {
            self.note_outcomes();
            Ok(())
        }
    }

    /// Take a store ticket for the outcomes recorded so far: the next group commit to start
    /// covers them (they need no flush of their own).
    fn note_outcomes(&self) {
        let mut dispatch = self
            .0
            .worker
            .dispatch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if dispatch.unflushed > 0 {
            dispatch.unflushed = 0;
            dispatch.outcomes = Some(self.store().ticket());
        }
    }

    /// Are the outcomes the worker recorded durable (covered by a group commit since)?
    fn outcomes_durable(&self) -> bool {
        let dispatch = self
            .0
            .worker
            .dispatch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dispatch.unflushed == 0 && dispatch.outcomes.is_none_or(|t| self.store().is_durable(t))
    }

    /// The deliveries that may start now, as runs of one key each (at most [`RUN_MAX`]), each
    /// key marked in flight.
    fn dispatchable(&self) -> Result<Vec<(Run, OrderKey)>, StoreError> {
        let now = self.now();
        // Only the ids: a delivery behind a busy key is skipped without reading its record, so a
        // backlog of one repository costs a walk of the inbox, not a decode of every record, on
        // every pass (one pass per arrival and per completion; docs/performance.md).
        let pending = self.store().inbox_ids()?;
        let mut dispatch = self
            .0
            .worker
            .dispatch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids: HashSet<&DeliveryId> = pending.iter().collect();
        dispatch.keys.retain(|id, _| ids.contains(id));
        let mut held: HashSet<OrderKey> = HashSet::new();
        let mut runs: Vec<(Run, OrderKey)> = Vec::new();
        let mut run_of: HashMap<OrderKey, usize> = HashMap::new();
        for id in &pending {
            let key = dispatch.keys.get(id).cloned();
            if let Some(key) = &key
                && (held.contains(key) || dispatch.in_flight.contains(key))
            {
                continue;
            }
            let Some(record) = self.store().delivery(id)? else {
                continue;
            };
            // The payload is read once: for the key, kept for the handler of a run's first.
            let mut payload = None;
            let key = match key {
                Some(k) => k,
                None => {
                    let Some(p) = self.payload_or_bury(&record, now)? else {
                        continue;
                    };
                    let k = OrderKey::of(&record.id, &record.event, &p);
                    dispatch.keys.insert(record.id.clone(), k.clone());
                    payload = Some(p);
                    k
                }
            };
            if held.contains(&key) || dispatch.in_flight.contains(&key) {
                held.insert(key);
                continue;
            }
            match self.readiness(&record, now) {
                Ready::Later { hold_until } => {
                    // Later deliveries of its key wait for it (the run so far goes ahead).
                    if hold_until > now {
                        held.insert(key);
                    }
                }
                Ready::Now => match run_of.get(&key) {
                    Some(&i) => {
                        let run = &mut runs[i].0;
                        run.push((record, None));
                        if run.len() >= RUN_MAX {
                            held.insert(key);
                        }
                    }
                    None => {
                        if dispatch.in_flight.len() + runs.len() >= MAX_IN_FLIGHT {
                            held.insert(key);
                            continue;
                        }
                        run_of.insert(key.clone(), runs.len());
                        runs.push((vec![(record, payload)], key));
                    }
                },
            }
        }
        for (_, key) in &runs {
            dispatch.in_flight.insert(key.clone());
        }
        Ok(runs)
    }

    /// A pending delivery's payload. One that cannot be read back (its segment corrupted on
    /// disk) becomes a dead letter with the error, instead of stopping the worker.
    fn payload_or_bury(
        &self,
        record: &DeliveryRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.store().payload(&record.id) {
            Ok(p) => Ok(Some(p.unwrap_or_default())),
            Err(StoreError::Segment(e)) => {
                tracing::error!(delivery = %record.id, error = %e, "payload unreadable: dead letter");
                Metrics::inc(&self.metrics().deliveries_dead);
                self.store()
                    .fail_delivery(&record.id, &e.to_string(), None, now)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn readiness(&self, record: &DeliveryRecord, now: DateTime<Utc>) -> Ready {
        readiness(record, &self.settings().delivery_retry, now)
    }

    /// Handle one delivery and record its outcome; then free its key and wake the dispatcher
    /// (also if the handler panics: the guard does it on drop).
    async fn process_run(&self, run: Run, key: OrderKey) {
        let _release = InFlight { app: self, key };
        for (record, payload) in run {
            let payload = match payload {
                Some(p) => p,
                None => match self.payload_or_bury(&record, self.now()) {
                    Ok(Some(p)) => p,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(delivery = %record.id, error = %e, "could not read the delivery");
                        return;
                    }
                },
            };
            // A delivery to retry later holds the rest of its key back: stop the run.
            if !self.process_one(PendingDelivery { record, payload }).await {
                return;
            }
        }
    }

    /// Handle one delivery and record its outcome; false when the next delivery of its key must
    /// not follow now (it failed and will be retried, or its outcome could not be recorded).
    async fn process_one(&self, d: PendingDelivery) -> bool {
        let id = d.record.id.clone();
        let span = tracing::info_span!(
            "delivery",
            delivery = %id,
            event = %d.record.event,
            repo = tracing::field::Empty
        );
        let result = self
            .engine()
            .handle_delivery(&d)
            .instrument(span.clone())
            .await;
        let recorded = {
            let _e = span.enter();
            self.record_outcome(&d, result)
        };
        match recorded {
            Ok(go_on) => {
                self.0
                    .worker
                    .dispatch
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .unflushed += 1;
                go_on
            }
            // The delivery stays in the inbox and is attempted again on the next pass.
            Err(e) => {
                tracing::error!(parent: &span, error = %e, "could not record the delivery's outcome");
                false
            }
        }
    }

    fn record_outcome(
        &self,
        d: &PendingDelivery,
        result: Result<Outcome, crate::engine::EngineError>,
    ) -> Result<bool, StoreError> {
        let id = &d.record.id;
        let now = self.now();
        match result {
            Ok(Outcome::Processed) => {
                Metrics::inc(&self.metrics().deliveries_processed);
                self.store()
                    .finish_delivery(id, DeliveryStatus::Processed, now)?;
                tracing::info!("processed");
            }
            Ok(Outcome::Ignored(reason)) => {
                Metrics::inc(&self.metrics().deliveries_ignored);
                tracing::info!(%reason, "ignored");
                self.store()
                    .finish_delivery(id, DeliveryStatus::Ignored { reason }, now)?;
            }
            Err(e) => {
                Metrics::inc(&self.metrics().deliveries_failed);
                let attempts = d.record.attempts + 1;
                let schedule = &self.settings().delivery_retry;
                let retry_at = (e.is_retryable() && attempts < schedule.max_attempts)
                    .then(|| now + chrono_duration(schedule.delay(attempts)));
                if retry_at.is_none() {
                    Metrics::inc(&self.metrics().deliveries_dead);
                }
                tracing::warn!(error = %e, attempts, ?retry_at, "delivery failed");
                self.store()
                    .fail_delivery(id, &e.to_string(), retry_at, now)?;
                return Ok(retry_at.is_none());
            }
        }
        Ok(true)
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
        // After a burst the freed heap goes back to the kernel (at most once a second).
        let mut trimmer = crate::memory::Trimmer::new(Duration::from_secs(1));
        loop {
            tokio::select! {
                drained = self.drain_pass() => {
                    match drained {
                        Ok(n) if n > 0 => trimmer.worked(),
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "worker could not read the inbox"),
                    }
                }
                // In-flight deliveries are abandoned, not recorded: they stay in the inbox and
                // are processed after the restart, like after a crash.
                _ = shutdown.wait() => return,
            }
            let wait = match self.store().next_retry_at() {
                Ok(Some(t)) => (t - self.now()).to_std().unwrap_or(Duration::ZERO),
                _ => Duration::from_secs(60),
            }
            .clamp(Duration::from_millis(50), Duration::from_secs(60));
            if trimmer.maybe_trim() {
                tracing::debug!(trims = trimmer.trims(), "gave freed heap back");
            }
            // Idle after a burst: wake up to trim when it is due.
            let wait = trimmer
                .due_in()
                .map_or(wait, |d| wait.min(d.max(Duration::from_millis(50))));
            // The outcomes ride along with the front door's next group commit; when none comes
            // in time (the burst is over), the worker flushes them itself.
            let wait = if self.outcomes_durable() {
                wait
            } else {
                wait.min(OUTCOMES_FLUSH_DELAY)
            };
            tokio::select! {
                _ = self.0.worker.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {
                    if !self.outcomes_durable()
                        && let Err(e) = self.flush_outcomes().await
                    {
                        tracing::error!(error = %e, "could not flush the recorded outcomes");
                    }
                }
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// Frees a delivery's key when its task ends, however it ends.
struct InFlight<'a> {
    app: &'a App,
    key: OrderKey,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut dispatch = self
            .app
            .0
            .worker
            .dispatch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dispatch.in_flight.remove(&self.key);
        drop(dispatch);
        self.app.0.worker.done.notify_one();
    }
}

/// A delivery waiting for its retry holds later deliveries of its key back for one base retry
/// interval after it failed (never past its own retry time), then lets them pass.
fn readiness(record: &DeliveryRecord, schedule: &RetrySchedule, now: DateTime<Utc>) -> Ready {
    match record.next_attempt_at {
        Some(at) if at > now => {
            let failed_at = at - chrono_duration(schedule.delay(record.attempts));
            Ready::Later {
                hold_until: (failed_at + chrono_duration(schedule.base)).min(at),
            }
        }
        _ => Ready::Now,
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        // A panic in a handler is a bug; the delivery stays in the inbox and is retried.
        tracing::error!(error = %e, "a delivery task ended abnormally");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retrying_delivery_holds_its_repository_back_for_one_base_interval() {
        let schedule = RetrySchedule {
            max_attempts: 8,
            base: Duration::from_secs(5),
            max: Duration::from_secs(600),
        };
        let t0 = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let secs = chrono::Duration::seconds;
        let mut r = DeliveryRecord {
            v: 1,
            id: id("11111111-2222-3333-4444-555555555555"),
            event: "pull_request".into(),
            seq: 1,
            first_seq: None,
            received_at: t0,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            finished_at: None,
            recovered: false,
        };
        assert!(matches!(readiness(&r, &schedule, t0), Ready::Now));
        // Third failure at t0: retried after delay(3) = 20 s; holds the others for 5 s only.
        r.attempts = 3;
        r.last_error = Some("GitHub answered 502".into());
        r.next_attempt_at = Some(t0 + secs(20));
        match readiness(&r, &schedule, t0 + secs(1)) {
            Ready::Later { hold_until } => assert_eq!(hold_until, t0 + secs(5)),
            Ready::Now => panic!("not ready before its retry time"),
        }
        // First failure: the hold never outlasts the retry itself.
        r.attempts = 1;
        r.next_attempt_at = Some(t0 + secs(5));
        match readiness(&r, &schedule, t0) {
            Ready::Later { hold_until } => assert_eq!(hold_until, t0 + secs(5)),
            Ready::Now => panic!("not ready before its retry time"),
        }
        assert!(matches!(readiness(&r, &schedule, t0 + secs(5)), Ready::Now));
    }

    fn id(s: &str) -> DeliveryId {
        DeliveryId::try_from(s.to_owned()).unwrap()
    }
}
