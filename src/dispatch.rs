//! The worker's state (src/worker.rs): what orders deliveries ([`OrderKey`]), the keys in flight
//! and the outcomes not yet flushed ([`Dispatch`]), its wake-ups and pass lock ([`WorkerState`]).
//! A leaf: the App holds a [`WorkerState`] without importing the worker.

use std::collections::{HashMap, HashSet};

use crate::types::DeliveryId;

/// What orders deliveries: the repository they are about, or the installation for installation
/// events. Deliveries with the same key are processed one at a time, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderKey {
    Repo(String),
    Installation(u64),
    /// A payload that names neither (ping, unknown events, malformed JSON): it touches no
    /// environment, so it needs no order beyond its own.
    Alone(DeliveryId),
}

impl OrderKey {
    /// Read the key from a raw payload without building a JSON tree. Repository names are
    /// case-insensitive on GitHub, so the key is too.
    pub fn of(id: &DeliveryId, event: &str, payload: &[u8]) -> Self {
        match crate::payload_check::check_json_object(payload) {
            Ok(head) => Self::from_head(id, event, head),
            Err(_) => Self::Alone(id.clone()),
        }
    }

    /// The key of a delivery whose payload's head the front door read while checking it.
    pub fn from_head(
        id: &DeliveryId,
        event: &str,
        head: crate::payload_check::PayloadHead,
    ) -> Self {
        match (event, head.repository, head.installation) {
            ("installation" | "installation_repositories", _, Some(i)) => Self::Installation(i),
            (_, Some(name), _) => Self::Repo(name.to_ascii_lowercase()),
            (_, None, Some(i)) => Self::Installation(i),
            _ => Self::Alone(id.clone()),
        }
    }
}

/// The worker's own state, one per App.
#[derive(Default)]
pub(crate) struct WorkerState {
    /// A delivery arrived (or is ready again).
    pub(crate) wake: tokio::sync::Notify,
    /// One worker pass at a time.
    pub(crate) lock: tokio::sync::Mutex<()>,
    /// A delivery task finished (its key is free again).
    pub(crate) done: tokio::sync::Notify,
    /// Keys with a delivery in flight.
    pub(crate) dispatch: std::sync::Mutex<Dispatch>,
}

/// The worker's view of what is running: keys with a delivery in flight.
#[derive(Debug, Default)]
pub(crate) struct Dispatch {
    pub(crate) in_flight: HashSet<OrderKey>,
    /// Keys read from payloads, so a delivery held back is not parsed again on every pass.
    pub(crate) keys: HashMap<DeliveryId, OrderKey>,
    /// Outcomes recorded since the worker's last flush (group commit of outcomes).
    pub(crate) unflushed: usize,
    /// The store's ticket covering the outcomes recorded so far and not known durable yet.
    pub(crate) outcomes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeliveryId {
        DeliveryId::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn order_key_of_payloads() {
        let d = id("11111111-2222-3333-4444-555555555555");
        let pr = br#"{"action":"opened","repository":{"full_name":"Octo/WebApp","x":[1,2]},"installation":{"id":7}}"#;
        assert_eq!(
            OrderKey::of(&d, "pull_request", pr),
            OrderKey::Repo("octo/webapp".into())
        );
        let inst = br#"{"action":"created","installation":{"id":7},"repositories":[]}"#;
        assert_eq!(
            OrderKey::of(&d, "installation", inst),
            OrderKey::Installation(7)
        );
        // installation_repositories carries no top-level repository, only the installation.
        assert_eq!(
            OrderKey::of(&d, "installation_repositories", inst),
            OrderKey::Installation(7)
        );
        assert_eq!(
            OrderKey::of(&d, "ping", br#"{"zen":"x","hook_id":1}"#),
            OrderKey::Alone(d.clone())
        );
        assert_eq!(
            OrderKey::of(&d, "push", b"not json"),
            OrderKey::Alone(d.clone())
        );
        // A repository field of the wrong shape is not a key, and nothing panics.
        assert_eq!(
            OrderKey::of(&d, "push", br#"{"repository":"x"}"#),
            OrderKey::Alone(d.clone())
        );
    }
}
