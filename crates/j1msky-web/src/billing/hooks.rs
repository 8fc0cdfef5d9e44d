//! `POST /webhooks/stripe`: the raw body is verified against `Stripe-Signature`, stored
//! under Stripe's event id and acknowledged; the applier is woken to apply it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use j1msky_billing::webhook::{self, Received};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// Stripe's event deliveries: verified against `Stripe-Signature`, stored, acknowledged.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "webhooks", security(()),
    params(("Stripe-Signature" = String, Header, description = "`t=…,v1=…`: HMAC-SHA256 of the raw body with the endpoint secret.")),
    request_body(content = Object, description = "A Stripe event, verified byte for byte as sent.", content_type = "application/json"),
    responses((status = 200, description = "Stored, or already stored.", body = crate::openapi::schemas::WebhookReceived),
        crate::openapi::responses::Webhook))]
pub async fn stripe(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = state.clock.now_micros();
    let live = state.catalogue.stripe.live;
    match webhook::receive(&state.db, &state.config.stripe_webhook_secrets, live, signature, &body, now).await {
        Ok(Received::Stored { .. }) => {
            state.billing_wake.notify_one();
            Json(json!({"received": true})).into_response()
        }
        Ok(Received::Duplicate { .. }) => Json(json!({"received": true, "duplicate": true})).into_response(),
        // Refused (400: a bad signature, a body we cannot read), or not stored (5xx):
        // Stripe shows the message in the endpoint's delivery log and delivers it again.
        Err(e) => ApiError::from(e).into_response(),
    }
}
