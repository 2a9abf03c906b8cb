//! Webhook signatures: the secrets GitHub signs deliveries with (several at once, so a secret
//! can be rotated), constant-time verification of `X-Hub-Signature-256`, and signing (tests,
//! the demo). Pure: no state of the App, so the App, the front door and the setup flow all use
//! it without depending on each other.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::types::Secret;

/// The configured webhook secrets (several, so a secret can be rotated without downtime).
/// Clones share one set: [`replace`](Self::replace) (an App registered through `/setup`) takes
/// effect for every holder at once.
#[derive(Clone, Debug)]
pub struct WebhookSecrets(Arc<std::sync::RwLock<Arc<Vec<Secret>>>>);

impl WebhookSecrets {
    /// From a comma-separated list; empty entries are dropped. `None` when nothing is left.
    pub fn parse(list: &str) -> Option<Self> {
        let secrets: Vec<Secret> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        (!secrets.is_empty()).then(|| Self(Arc::new(std::sync::RwLock::new(Arc::new(secrets)))))
    }

    fn current(&self) -> Arc<Vec<Secret>> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Verify with `other`'s secrets from now on (every clone of `self` included).
    pub fn replace(&self, other: &WebhookSecrets) {
        let secrets = other.current();
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = secrets;
    }

    /// Does `header` (`sha256=<hex>`) match the HMAC-SHA256 of `body` under any secret?
    /// Compared in constant time (`Mac::verify_slice`).
    pub fn verify(&self, header: &str, body: &[u8]) -> bool {
        let Some(hex_sig) = header.strip_prefix("sha256=") else {
            return false;
        };
        let Ok(sig) = hex::decode(hex_sig.trim()) else {
            return false;
        };
        self.current().iter().any(|secret| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        })
    }

    /// The signature header value for `body` under the first secret (tests, the demo).
    pub fn sign(&self, body: &[u8]) -> String {
        let secrets = self.current();
        sign(secrets.first().map_or("", Secret::expose), body)
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
