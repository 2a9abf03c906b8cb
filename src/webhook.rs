//! `POST /webhook`: the front door (docs/architecture.md, "The parts and the flow"). Checks run in this order and nothing is stored
//! on any error: size (413), headers (400), signature (401), JSON object (400); then `ping` is
//! answered 200, a delivery id seen before 200 `{"duplicate":true}`, and everything else is
//! written to the inbox and flushed to disk before the 202.
//!
//! Before the signature is checked, a request is anyone's: the body bytes it holds come out of
//! one budget shared by all requests ([`UnverifiedBudget`], `STAGEBOT_MAX_UNVERIFIED_BYTES`).
//! A request reserves its `Content-Length` up front (a chunked one, as its buffer grows) and
//! gives the bytes back once its signature has been checked or it ends; a request that does not
//! fit is answered `503` with `Retry-After` without its body being read.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, StatusCode, header::RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::app::App;
pub use crate::settings::DEFAULT_MAX_UNVERIFIED_BYTES;
pub use crate::signature::{WebhookSecrets, sign};
use crate::store::Inserted;
use crate::types::DeliveryId;

/// GitHub caps payloads at 25 MiB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;
/// A client that has not sent its whole body by then is cut off.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// What a `503` for a full budget asks the client to wait, in seconds.
pub const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// The bytes all requests together may hold before their signature is checked.
#[derive(Clone, Debug)]
pub struct UnverifiedBudget {
    bytes: Arc<Semaphore>,
}

impl UnverifiedBudget {
    /// A budget of `max` bytes; it never admits less than one payload of [`MAX_BODY`].
    pub fn new(max: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(max.clamp(MAX_BODY, Semaphore::MAX_PERMITS))),
        }
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    fn reserve(&self, n: usize) -> Option<Reservation> {
        let mut r = Reservation {
            budget: Arc::clone(&self.bytes),
            held: None,
        };
        r.grow(n).then_some(r)
    }
}

/// Bytes reserved by one request; given back when dropped.
struct Reservation {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    fn bytes(&self) -> usize {
        self.held
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Reserve `n` more bytes; false (nothing more reserved) when the budget is short.
    fn grow(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(n) else {
            return false;
        };
        match Arc::clone(&self.budget).try_acquire_many_owned(n) {
            Ok(permit) => {
                match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("payload larger than {} MiB", MAX_BODY / 1024 / 1024),
    )
}

/// The `503` for a full budget: nothing was read, the client may send again shortly.
fn busy() -> Response {
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many unverified request bodies in flight; retry shortly",
    );
    resp.headers_mut().insert(
        RETRY_AFTER,
        axum::http::HeaderValue::from(BUSY_RETRY_AFTER_SECS),
    );
    resp
}

/// Read the body under the size limit and the read timeout into one buffer whose capacity is
/// reserved from the budget first (all of `Content-Length` up front, or as a chunked body grows).
async fn read_body(
    body: Body,
    announced: Option<usize>,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, Response> {
    let mut buf: Vec<u8> = Vec::with_capacity(announced.unwrap_or(0));
    let read = async {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let needed = buf.len() + data.len();
            if needed > MAX_BODY {
                return Err(too_large());
            }
            if needed > buf.capacity() {
                // Grow by doubling (bounded by the limit), reserving the growth first.
                let target = needed.max(buf.capacity() * 2).clamp(4096, MAX_BODY);
                if !reservation.grow(target.saturating_sub(reservation.bytes())) {
                    return Err(busy());
                }
                buf.reserve_exact(target - buf.len());
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "timed out reading the request body",
        )),
        Ok(Err(resp)) => Err(resp),
        Ok(Ok(())) => Ok(buf),
    }
}

pub use crate::payload_check::{NotAPayload, PayloadHead, check_json_object};

/// The `POST /webhook` handler.
pub async fn receive(
    State(app): State<App>,
    Extension(budget): Extension<UnverifiedBudget>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    // 413 before reading anything when the client announces too much.
    let announced = header(&headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > MAX_BODY as u64) {
        return too_large();
    }
    let announced = announced.and_then(|len| usize::try_from(len).ok());
    // Then the budget: a request that does not fit is not read at all.
    let Some(mut reservation) = budget.reserve(announced.unwrap_or(0)) else {
        tracing::warn!(
            bytes = announced.unwrap_or(0),
            "unverified-body budget full; answered 503"
        );
        return busy();
    };
    let body = match read_body(body, announced, &mut reservation).await {
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
    let verified = app.webhook_secrets().verify(signature, &body);
    // Checked: the bytes are no longer anyone's.
    drop(reservation);
    if !verified {
        return error(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 does not match the payload",
        );
    }
    let body = Bytes::from(body);
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
    let head = match check_json_object(&body) {
        Ok(head) => head,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let span = tracing::info_span!("webhook", delivery = %delivery, event);
    record(&app, &delivery, event, &body, head)
        .instrument(span)
        .await
}

/// Answer a verified delivery: `ping` at once, a duplicate 200, anything else durable then 202.
async fn record(
    app: &App,
    delivery: &DeliveryId,
    event: &str,
    body: &Bytes,
    head: PayloadHead,
) -> Response {
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
            // The worker orders it without reading the payload back for its key.
            app.learn_order_key(
                delivery,
                crate::worker::OrderKey::from_head(delivery, event, head),
            );
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

    #[test]
    fn replaced_secrets_apply_to_every_clone() {
        let secrets = WebhookSecrets::parse("first").unwrap();
        let held = secrets.clone();
        let body = br#"{"zen":"x"}"#;
        secrets.replace(&WebhookSecrets::parse("second").unwrap());
        assert!(held.verify(&sign("second", body), body));
        assert!(!held.verify(&sign("first", body), body));
        assert_eq!(held.sign(body), sign("second", body));
    }
}
