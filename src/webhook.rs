//! `POST /webhook`: the front door (docs/architecture.md, "The parts and the flow"). Checks run in this order and nothing is stored
//! on any error: size (413), headers (400), signature (401), JSON object (400); then `ping` is
//! answered 200, a delivery id seen before 200 `{"duplicate":true}`, and everything else is
//! written to the inbox and flushed to disk before the 202.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use sha2::Sha256;
use tracing::Instrument;

use crate::app::App;
use crate::store::Inserted;
use crate::types::{DeliveryId, Secret};

/// GitHub caps payloads at 25 MiB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;
/// A client that has not sent its whole body by then is cut off.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The configured webhook secrets (several, so a secret can be rotated without downtime).
#[derive(Clone, Debug)]
pub struct WebhookSecrets(Vec<Secret>);

impl WebhookSecrets {
    /// From a comma-separated list; empty entries are dropped. `None` when nothing is left.
    pub fn parse(list: &str) -> Option<Self> {
        let secrets: Vec<Secret> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        (!secrets.is_empty()).then_some(Self(secrets))
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
        self.0.iter().any(|secret| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        })
    }

    /// The signature header value for `body` under the first secret (tests, the demo).
    pub fn sign(&self, body: &[u8]) -> String {
        sign(self.0[0].expose(), body)
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

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Read the body under the size limit and the read timeout.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    let limited = Limited::new(body, MAX_BODY);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "timed out reading the request body",
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("payload larger than {} MiB", MAX_BODY / 1024 / 1024),
        )),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The `POST /webhook` handler.
pub async fn receive(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    // 413 before reading anything when the client announces too much.
    if let Some(len) = header(&headers, "content-length").and_then(|v| v.parse::<u64>().ok())
        && len > MAX_BODY as u64
    {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("payload larger than {} MiB", MAX_BODY / 1024 / 1024),
        );
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(event) = header(&headers, "x-github-event") else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
    };
    let Some(delivery) = header(&headers, "x-github-delivery") else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header");
    };
    let Some(signature) = header(&headers, "x-hub-signature-256") else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing X-Hub-Signature-256 header",
        );
    };
    if !app.webhook_secrets().verify(signature, &body) {
        return error(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 does not match the payload",
        );
    }
    let delivery = match DeliveryId::new(delivery) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if event.is_empty()
        || event.len() > 64
        || !event.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    {
        return error(StatusCode::BAD_REQUEST, "malformed X-GitHub-Event header");
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => return error(StatusCode::BAD_REQUEST, "payload is not a JSON object"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("payload is not JSON: {e}")),
    }
    let span = tracing::info_span!("webhook", delivery = %delivery, event);
    record(&app, &delivery, event, &body).instrument(span).await
}

/// Answer a verified delivery: `ping` at once, a duplicate 200, anything else durable then 202.
async fn record(app: &App, delivery: &DeliveryId, event: &str, body: &Bytes) -> Response {
    app.metrics().webhook(event);
    if event == "ping" {
        tracing::info!("ping");
        return (StatusCode::OK, Json(json!({ "ok": true, "pong": true }))).into_response();
    }
    match app
        .store()
        .insert_delivery(delivery, event, body, app.now())
        .await
    {
        Ok(Inserted::Duplicate) => {
            tracing::info!("duplicate delivery, not processed again");
            (StatusCode::OK, Json(json!({ "duplicate": true }))).into_response()
        }
        Ok(Inserted::New) => {
            tracing::info!(bytes = body.len(), "delivery stored");
            app.wake_worker();
            (
                StatusCode::ACCEPTED,
                Json(json!({ "accepted": true, "delivery": delivery.as_str() })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store delivery");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not store the delivery; GitHub will let you redeliver it",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_in_any_rotation_slot() {
        let secrets = WebhookSecrets::parse("new-secret, old-secret").unwrap();
        let body = br#"{"zen":"x"}"#;
        assert!(secrets.verify(&sign("old-secret", body), body));
        assert!(secrets.verify(&sign("new-secret", body), body));
        assert!(!secrets.verify(&sign("other", body), body));
        assert!(!secrets.verify("sha256=zz", body));
        assert!(!secrets.verify("sha1=abcd", body));
        assert!(!secrets.verify(&sign("new-secret", b"{}"), body));
        assert!(WebhookSecrets::parse(" , ").is_none());
    }
}
