//! The runner registry: which environments have a runner task at work, and the channel through
//! which a newer op's generation reaches a running one (src/lifecycle.rs runs them). At most one
//! runner per environment; the registry's lock decides between a runner leaving and an op
//! arriving, so an op is never stranded without a runner.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{Notify, watch};

use crate::types::EnvId;

/// The runners at work, by environment.
#[derive(Default)]
pub struct RunnerRegistry {
    /// Each working runner's channel: the newest generation it must work toward.
    slots: Mutex<HashMap<EnvId, watch::Sender<u64>>>,
    /// Notified whenever a runner leaves.
    left: Notify,
}

impl RunnerRegistry {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<EnvId, watch::Sender<u64>>> {
        // A panic while holding it leaves the map itself consistent.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Make sure a runner works on `id` toward `generation`: a runner at work is told the new
    /// generation (`None`); otherwise `id` is registered and the receiver for the runner the
    /// caller must start is returned.
    pub fn claim(&self, id: &EnvId, generation: u64) -> Option<watch::Receiver<u64>> {
        let mut slots = self.slots();
        if let Some(tx) = slots.get(id) {
            tx.send_replace(generation);
            return None;
        }
        let (tx, rx) = watch::channel(generation);
        slots.insert(id.clone(), tx);
        Some(rx)
    }

    /// The runner of `id` leaves if `nothing_left()` still holds, checked under the registry's
    /// lock (a [`claim`](Self::claim) waits for it, so an op written meanwhile is seen either by
    /// this check or by a new runner). True when it left.
    pub fn leave_if(&self, id: &EnvId, nothing_left: impl FnOnce() -> bool) -> bool {
        let mut slots = self.slots();
        if !nothing_left() {
            return false;
        }
        slots.remove(id);
        drop(slots);
        self.left.notify_waiters();
        true
    }

    /// The runner of `id` leaves (it stopped).
    pub fn leave(&self, id: &EnvId) {
        self.slots().remove(id);
        self.left.notify_waiters();
    }

    /// Environments with a runner at work.
    pub fn busy(&self) -> usize {
        self.slots().len()
    }

    /// Wait until no runner is at work.
    pub async fn idle(&self) {
        loop {
            let notified = self.left.notified();
            if self.busy() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(slug: &str) -> EnvId {
        EnvId {
            repo: "acme/webapp".parse().unwrap(),
            slug: crate::types::Slug::new(slug).unwrap(),
        }
    }

    #[test]
    fn one_runner_per_environment_told_of_newer_generations() {
        let runners = RunnerRegistry::default();
        let mut rx = runners.claim(&id("pr-1"), 1).expect("a runner to start");
        assert!(runners.claim(&id("pr-1"), 2).is_none(), "already at work");
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
        assert!(runners.claim(&id("pr-2"), 1).is_some());
        assert_eq!(runners.busy(), 2);
    }

    #[test]
    fn a_runner_leaves_only_when_nothing_is_left_to_do() {
        let runners = RunnerRegistry::default();
        let _rx = runners.claim(&id("pr-1"), 1).unwrap();
        assert!(!runners.leave_if(&id("pr-1"), || false));
        assert_eq!(runners.busy(), 1);
        assert!(runners.leave_if(&id("pr-1"), || true));
        assert_eq!(runners.busy(), 0);
        // Gone: the next op starts a new runner.
        assert!(runners.claim(&id("pr-1"), 2).is_some());
    }

    #[tokio::test]
    async fn idle_waits_for_the_last_runner_to_leave() {
        let runners = std::sync::Arc::new(RunnerRegistry::default());
        let _rx = runners.claim(&id("pr-1"), 1).unwrap();
        let waiter = tokio::spawn({
            let runners = std::sync::Arc::clone(&runners);
            async move { runners.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        runners.leave(&id("pr-1"));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("idle once the runner left")
            .unwrap();
    }
}
