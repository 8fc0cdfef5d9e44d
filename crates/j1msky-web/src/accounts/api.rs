//! The JSON API under `/api/v1`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use j1msky_accounts::{api_keys, customers};
use j1msky_audit::Actor;
use j1msky_core::vocab::UserRole;
use serde::Deserialize;
use serde_json::json;

use crate::auth::ApiCaller;
use crate::error::{ApiError, JsonBody};
use crate::state::AppState;

/// Who am I: the key's customer, or the session's user and customer.
#[utoipa::path(get, path = "/api/v1/me", tag = "account", security(("bearer" = []), ("x_api_key" = []), ("session" = [])),
    responses((status = 200, description = "The caller.", body = crate::openapi::schemas::Me), crate::openapi::responses::Caller))]
pub async fn me(State(state): State<AppState>, caller: ApiCaller) -> Result<Json<serde_json::Value>, ApiError> {
    let customer = match caller.customer_id() {
        Some(cid) => Some(customers::get(&state.db, cid).await?),
        None => None,
    };
    Ok(Json(match &caller {
        ApiCaller::Key { key_id, .. } => {
            json!({"auth": "api_key", "key_id": key_id, "customer": customer, "user": null})
        }
        // A same-origin script learns here the token its state-changing calls must send
        // in X-CSRF-Token (no CORS, so another site cannot read it).
        ApiCaller::User(s) => {
            json!({"auth": "session", "user": s.user, "customer": customer, "csrf_token": s.csrf_token})
        }
    }))
}

fn customer_scope(caller: &ApiCaller) -> Result<&str, ApiError> {
    caller.customer_id().ok_or_else(|| ApiError::forbidden("operators act on customers' keys from /admin or the CLI"))
}

/// The caller's customer's keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "account", security(("bearer" = []), ("x_api_key" = []), ("session" = [])),
    responses((status = 200, description = "The keys, revoked ones too.", body = crate::openapi::schemas::KeyList), crate::openapi::responses::Caller))]
pub async fn list_keys(State(state): State<AppState>, caller: ApiCaller) -> Result<Json<serde_json::Value>, ApiError> {
    let cid = customer_scope(&caller)?;
    let keys = api_keys::list(&state.db, cid).await?;
    Ok(Json(json!({"data": keys})))
}

/// A new key's name.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
}

/// Creates a key; the answer carries the secret, shown this once. Owners only,
/// from a signed-in session: a key cannot mint more keys.
#[utoipa::path(post, path = "/api/v1/keys", tag = "account", security(("session" = []), ("bearer" = []), ("x_api_key" = [])),
    request_body = CreateKey,
    responses((status = 201, description = "The key and its secret, shown this once.", body = crate::openapi::schemas::CreatedKey),
        crate::openapi::responses::Caller, crate::openapi::responses::Body, crate::openapi::responses::Conflict))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: ApiCaller,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<Response, ApiError> {
    let ApiCaller::User(s) = &caller else {
        return Err(ApiError::forbidden("API keys are created by the account owner from a signed-in session"));
    };
    if s.user.role != UserRole::Owner {
        return Err(ApiError::forbidden("only the account owner creates API keys"));
    }
    let cid = customer_scope(&caller)?;
    let (key, secret) = api_keys::create(&state.db, &Actor::user(&s.user.id), cid, &body.name, state.now()).await?;
    // Shown this once: no cache (browser or proxy) keeps a copy of the secret.
    let no_store = [(axum::http::header::CACHE_CONTROL, "no-store")];
    Ok((StatusCode::CREATED, no_store, Json(json!({"key": key, "secret": secret}))).into_response())
}

/// Revokes one of the caller's customer's keys; another customer's key is 404.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "account", security(("bearer" = []), ("x_api_key" = []), ("session" = [])),
    params(("id" = String, Path, description = "The key's id.")),
    responses((status = 200, description = "The revoked key.", body = crate::openapi::schemas::KeyOnly),
        crate::openapi::responses::Caller, crate::openapi::responses::NotFound))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cid = customer_scope(&caller)?;
    let actor = match &caller {
        ApiCaller::User(s) if s.user.role == UserRole::Owner => Actor::user(&s.user.id),
        ApiCaller::User(_) => return Err(ApiError::forbidden("only the account owner revokes API keys")),
        ApiCaller::Key { key_id, .. } => Actor(format!("api_key:{key_id}")),
    };
    let key = api_keys::revoke(&state.db, &actor, &id, Some(cid), state.now()).await?;
    Ok(Json(json!({"key": key})))
}
